"""PoolState: invariants, refusals, atomic save/load."""

import numpy as np
import pytest

from alframe.errors import StateMismatchError
from alframe.rundir.state import PoolState, RunProgress


def make(n=10, holdout=(8, 9)):
    return PoolState.create(n, holdout=np.array(holdout), progress=RunProgress(dataset_fingerprint="d1"))


def test_new_state_has_everything_in_pool_but_holdout():
    s = make()
    assert s.n == 10 and s.n_labelled == 0 and s.n_pool == 8
    np.testing.assert_array_equal(s.pool_idx, np.arange(8))
    assert s.last_round == -1


def test_label_records_round_and_label():
    s = make()
    s.label(np.array([3, 1]), np.array([7, 2]), round=0)
    s.label(np.array([5]), np.array([0]), round=1)
    np.testing.assert_array_equal(s.labelled_idx, [1, 3, 5])
    assert s.labels[3] == 7 and s.labels[1] == 2 and s.labels[5] == 0
    assert s.labelled_round[5] == 1 and s.last_round == 1
    assert s.n_pool == 5 and not s.pool_mask[[1, 3, 5]].any()


@pytest.mark.parametrize("idx,y,match", [
    ([1, 1], [0, 0], "duplicate"),
    ([10], [0], "out of range"),
    ([-1], [0], "out of range"),
    ([8], [0], "held out"),
    ([2], [0, 1], "2 labels"),
    ([2], [12], r"labels must lie in \[0, 10\)"),
])
def test_label_refuses_bad_input_and_writes_nothing(idx, y, match):
    s = make()
    before = (s.labels.copy(), s.labelled_round.copy())
    with pytest.raises(ValueError, match=match):
        s.label(np.array(idx), np.array(y), round=0, num_classes=10)
    np.testing.assert_array_equal(s.labels, before[0])
    np.testing.assert_array_equal(s.labelled_round, before[1])


def test_label_refuses_already_labelled_and_keeps_first_label():
    s = make()
    s.label(np.array([2]), np.array([4]), round=0)
    with pytest.raises(ValueError, match="already labelled: \\[2\\]"):
        s.label(np.array([0, 2]), np.array([1, 5]), round=1)
    assert s.labels[2] == 4 and s.labels[0] == -1  # nothing half-written


def test_save_load_round_trip_is_exact_and_leaves_no_temp_files(tmp_path):
    s = make()
    s.label(np.array([0, 4]), np.array([1, 9]), round=0)
    s.progress.run_id = "abc"
    s.save(tmp_path)
    t = PoolState.load(tmp_path, expect={"dataset_fingerprint": "d1"})
    for name in ("labelled_round", "labels", "available"):
        np.testing.assert_array_equal(getattr(t, name), getattr(s, name))
    assert t.progress == s.progress
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool_state.json", "pool_state.npz"]


def test_load_refuses_state_of_another_dataset(tmp_path):
    make().save(tmp_path)
    with pytest.raises(StateMismatchError, match="dataset_fingerprint='d1'.*'d2'"):
        PoolState.load(tmp_path, expect={"dataset_fingerprint": "d2"})


def test_load_missing_state_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        PoolState.load(tmp_path)


def test_create_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n=0"):
        PoolState.create(0)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        PoolState.create(5, holdout=np.array([5]))


def test_even_batches_cover_every_sample_once_per_epoch():
    import torch

    from alframe.data.base import EvenBatchSampler

    sampler = EvenBatchSampler(130, 128, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert [len(b) for b in batches] == [65, 65] and len(sampler) == 2
    assert sorted(i for b in batches for i in b) == list(range(130))
    assert [len(b) for b in EvenBatchSampler(70, 32)] == [24, 23, 23]
    assert [len(b) for b in EvenBatchSampler(64, 32)] == [32, 32]
    again = list(EvenBatchSampler(130, 128, generator=torch.Generator().manual_seed(0)))
    assert again == batches  # seeded: the same epochs on resume


def test_atomic_write_fsyncs_only_durable_files(tmp_path, monkeypatch):
    import os

    from alframe.rundir.state import atomic_write

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    atomic_write(tmp_path / "a.bin", lambda f: f.write(b"one"))
    atomic_write(tmp_path / "b.txt", lambda f: f.write(b"two"), durable=False)
    assert len(synced) == 1
    assert (tmp_path / "a.bin").read_bytes() == b"one" and (tmp_path / "b.txt").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt"]  # no temp files left


def test_save_fsyncs_the_state_but_not_its_readable_copy(tmp_path, monkeypatch):
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    s = make()
    s.label(np.array([3]), np.array([7]), round=0)
    s.save(tmp_path)
    assert len(synced) == 1 and ".pool_state.npz." in synced[0]
    assert PoolState.load(tmp_path).labels[3] == 7


def test_progress_of_an_earlier_version_loads_with_no_unlogged_metrics():
    d = RunProgress(round=2, evaluated_round=2).to_dict()
    del d["unlogged"]  # saved before the field existed
    p = RunProgress.from_dict(d)
    assert p.unlogged == [] and p.round == 2
    p.unlogged.append({"step": 3, "metrics": {"labels_received": 3.0}})
    assert RunProgress.from_dict(p.to_dict()).unlogged == [{"step": 3, "metrics": {"labels_received": 3.0}}]
