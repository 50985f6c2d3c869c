"""Image folders decoded on access (dataset.cache=false / auto over the limit): the same data,
fingerprint, checks and scores as the in-memory folder, through DataLoader worker processes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from alframe.data.base import TensorImageDataset, load_data, make_loader
from alframe.data.lazy import ImageFiles, use_cache
from alframe.errors import ConfigError, DatasetError
from alframe.models.cnn import SmallCNN
from alframe.scoring.evaluate import evaluate
from alframe.scoring.pool import compute_outputs

from .helpers import CLASSES, cfg_for, compose_shared, shared_store, write_folder


@pytest.fixture
def store(tmp_path_factory):
    return shared_store(tmp_path_factory)


def _both(tmp_path, *extra):
    cached = load_data(cfg_for(tmp_path, tmp_path / "photos", "dataset.cache=true", *extra).dataset)
    lazy = load_data(cfg_for(tmp_path, tmp_path / "photos", "dataset.cache=false", "dataset.num_workers=2",
                             *extra).dataset)
    return cached, lazy


def test_lazy_folder_has_the_cached_images_labels_split_and_fingerprint(tmp_path):
    write_folder(tmp_path / "photos", corrupt=False)
    cached, lazy = _both(tmp_path, "dataset.val_size=3")
    assert isinstance(cached.train, TensorImageDataset) and isinstance(lazy.train, ImageFiles)
    assert cached.extras["cached"] and not lazy.extras["cached"]
    assert lazy.fingerprint == cached.fingerprint  # a run may resume with the other cache setting
    assert lazy.extras["paths"] == cached.extras["paths"] and lazy.input_shape == cached.input_shape == (3, 16, 16)
    np.testing.assert_array_equal(lazy.val_idx, cached.val_idx)
    np.testing.assert_allclose(lazy.extras["mean"], cached.extras["mean"], rtol=1e-12)
    np.testing.assert_allclose(lazy.extras["std"], cached.extras["std"], rtol=1e-12)
    for ds_l, ds_c in ((lazy.train, cached.train), (lazy.test, cached.test)):
        x_l, y_l = next(iter(make_loader(ds_l, batch_size=len(ds_l))))  # 2 worker processes decode
        torch.testing.assert_close(x_l, ds_c.x, rtol=0, atol=1e-6)
        assert torch.equal(y_l, ds_c.y)


def test_pool_scoring_and_evaluation_work_on_a_lazy_folder(tmp_path):
    write_folder(tmp_path / "photos", corrupt=False)
    cached, lazy = _both(tmp_path)
    torch.manual_seed(0)
    net = SmallCNN(num_classes=3, input_shape=(3, 16, 16))
    idx = np.array([5, 0, 17, 3])
    req = {"probs", "embeddings", "labelled_embeddings"}
    a = compute_outputs(net, cached.train, idx, req, batch_size=3, labelled_idx=np.array([1, 2]))
    b = compute_outputs(net, lazy.train, idx, req, batch_size=3, labelled_idx=np.array([1, 2]))
    for name in ("probs", "embeddings", "labelled_embeddings"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-5, atol=1e-5)
    assert evaluate(net, lazy.test, batch_size=4) == pytest.approx(evaluate(net, cached.test, batch_size=4), abs=1e-5)


def test_lazy_folder_checks_every_file_before_training(tmp_path):
    info = write_folder(tmp_path / "photos")  # one truncated PNG
    with pytest.raises(DatasetError) as e:
        load_data(cfg_for(tmp_path, tmp_path / "photos", "dataset.cache=false").dataset)
    assert str(info["bad"]) in str(e.value) and "1 image file(s)" in str(e.value)
    data = load_data(cfg_for(tmp_path, tmp_path / "photos", "dataset.cache=false",
                             "dataset.skip_bad_files=true").dataset)
    assert [p for p, _ in data.extras["skipped"]] == [str(info["bad"])]
    assert data.n_train + len(data.test) == 36 and str(info["bad"]) not in data.extras["paths"]


def test_cache_auto_follows_the_size_limit_and_bad_values_are_refused(tmp_path):
    # 36 images x 3 x 16 x 16 float32 = 110,592 bytes; the in-memory load peaks at 4x (0.00041 GiB)
    write_folder(tmp_path / "photos", corrupt=False)
    small = load_data(cfg_for(tmp_path, tmp_path / "photos", "dataset.cache_max_gb=0.0001").dataset)
    big = load_data(cfg_for(tmp_path, tmp_path / "photos", "dataset.cache_max_gb=0.001").dataset)
    assert not small.extras["cached"] and big.extras["cached"]
    assert use_cache("auto", 1000, 3, (128, 128), cache_max_gb=0.73) is False  # 4 x 0.183 = 0.732 GiB
    assert use_cache("auto", 1000, 3, (128, 128), cache_max_gb=0.74) is True
    assert use_cache(True, 10**9, 3, (512, 512)) is True and use_cache("false", 1, 1, (1, 1)) is False
    with pytest.raises(ConfigError, match=r"dataset.cache='sometimes' is invalid: allowed auto, true, false"):
        use_cache("sometimes", 1, 1, (1, 1))
    with pytest.raises(ConfigError, match=r"dataset.cache_max_gb=0 is invalid"):
        use_cache("auto", 1, 1, (1, 1), cache_max_gb=0)


def test_lazy_unlabelled_folder_has_the_cached_pool(tmp_path):
    from .conftest import compose

    write_folder(tmp_path / "photos", corrupt=False)
    common = ["dataset=unlabelled_folder", f"dataset.root={tmp_path / 'photos'}", "dataset.image_size=16",
              f"dataset.classes=[{','.join(CLASSES)}]"]
    cached = load_data(compose([*common, "dataset.cache=true"], tmp_path / "out").dataset)
    lazy = load_data(compose([*common, "dataset.cache=false"], tmp_path / "out").dataset)
    assert lazy.fingerprint == cached.fingerprint and lazy.targets is None and len(lazy.test) == 0
    x, y = next(iter(make_loader(lazy.train, batch_size=100)))
    torch.testing.assert_close(x, cached.train.x, rtol=0, atol=1e-6)
    assert (y == -1).all()


@pytest.mark.slow  # ~70 s on the loaded 2-core box (worker processes start per loader)
def test_lazy_image_folder_end_to_end_with_worker_processes(tmp_path, store):
    from alframe.loop.experiment import run_experiment

    write_folder(tmp_path / "photos", per_class=20, corrupt=False)
    cfg = compose_shared(["dataset=image_folder", f"dataset.root={tmp_path / 'photos'}", "dataset.image_size=16",
                          "dataset.cache=false", "dataset.num_workers=2", "dataset.test_size=12",
                          "trainer.max_epochs=2", "loop.initial_size=6", "loop.query_size=4", "loop.rounds=1",
                          "mlflow.experiment_name=lazy_folder"], tmp_path / "out", store)
    res = run_experiment(cfg, tmp_path / "out" / "job")
    assert [h["n_labelled"] for h in res.history] == [6, 10]
    assert all(0.0 <= h["test_accuracy"] <= 1.0 for h in res.history)
    with (res.run_dir / "queries.csv").open() as f:
        assert {r["class_name"] for r in csv.DictReader(f)} <= set(CLASSES)


def test_scoring_with_worker_processes_trims_the_heap_after_every_batch(tmp_path, monkeypatch):
    """Lazy folders decode in worker processes; glibc keeps what scoring frees unless trimmed,
    so every scored or evaluated batch from workers is followed by ``malloc_trim`` (measured
    growth without it: ~13 MB per batch, benchmarks/bench_folders.py)."""
    import sys

    import alframe.data.base as base

    write_folder(tmp_path / "photos", corrupt=False)
    _, lazy = _both(tmp_path)
    if sys.platform.startswith("linux"):
        assert base.trim_heap() is True  # glibc's malloc_trim found and called
    calls = []
    monkeypatch.setattr(base, "trim_heap", lambda: calls.append(1) or True)
    monkeypatch.setattr(base, "loader_workers", lambda ds: 2)  # as a lazy folder with dataset.num_workers=2
    net = SmallCNN(num_classes=3, input_shape=(3, 16, 16))
    n = len(lazy.train)
    compute_outputs(net, lazy.train, np.arange(n), {"probs"}, batch_size=4)
    assert len(calls) == -(-n // 4)  # one trim per batch
    evaluate(net, lazy.test, batch_size=4)
    assert len(calls) == -(-n // 4) + -(-len(lazy.test) // 4)
    calls.clear()
    list(base.batches(make_loader(TensorImageDataset(torch.zeros(6, 3, 4, 4)), batch_size=4, num_workers=0)))
    assert calls == []  # no workers, nothing to trim
