"""image_folder / unlabelled_folder on generated PNG folders of real digits (one corrupt file)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alframe.data.base import load_data
from alframe.data.folders import read_images
from alframe.errors import DatasetError

from .conftest import compose
from .helpers import CLASSES, cfg_for, compose_shared, shared_store, write_folder, write_unlabelled


@pytest.fixture
def store(tmp_path_factory) -> Path:
    """The MLflow store shared by this session's dataset/model end-to-end runs."""
    return shared_store(tmp_path_factory)

def test_corrupt_file_is_a_clear_error_naming_its_path_before_training(tmp_path):
    info = write_folder(tmp_path / "photos")
    with pytest.raises(DatasetError) as e:
        load_data(cfg_for(tmp_path, tmp_path / "photos").dataset)
    msg = str(e.value)
    assert str(info["bad"]) in msg and "1 image file(s)" in msg and "dataset.skip_bad_files=true" in msg


def test_skip_bad_files_loads_the_rest_with_folder_class_names(tmp_path, caplog):
    info = write_folder(tmp_path / "photos")
    data = load_data(cfg_for(tmp_path, tmp_path / "photos", "dataset.skip_bad_files=true",
                             "dataset.test_size=9", "dataset.val_size=3").dataset)
    assert data.class_names == CLASSES and data.num_classes == 3
    assert [p for p, _ in data.extras["skipped"]] == [str(info["bad"])]
    assert data.n_train + len(data.test) == 36 and len(data.test) == 9
    assert np.bincount(data.test.y.numpy(), minlength=3).tolist() == [3, 3, 3]  # stratified
    assert len(data.val_idx) == 3 and data.input_shape == (3, 16, 16)
    # Each index maps to its file; pixels are the file's (size kept), normalised per channel.
    mean = torch.tensor(data.extras["mean"]).view(3, 1, 1)
    std = torch.tensor(data.extras["std"]).view(3, 1, 1)
    for i in (0, 7, data.n_train - 1):
        rgb, c = info["files"][data.extras["paths"][i]]
        assert data.targets[i] == c and Path(data.extras["paths"][i]).parent.name == CLASSES[c]
        expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
        torch.testing.assert_close(data.train.x[i] * std + mean, expected, atol=1e-5, rtol=0)
    assert set(data.extras["paths"]).isdisjoint(data.extras["test_paths"])
    assert f"skipping 1 unreadable image file(s) under {tmp_path / 'photos'}: {info['bad']}" in caplog.text


def test_resize_crop_grey_and_unreadable_reasons(tmp_path):
    wide = tmp_path / "wide.jpg"
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 200  # the centre 20x20 is bright, the sides dark
    Image.fromarray(arr).save(wide, quality=100)
    (tmp_path / "text.png").write_text("not an image")
    x, ok, bad = read_images([wide, tmp_path / "text.png", tmp_path / "missing.png"], channels=1, image_size=10)
    assert x.shape == (1, 1, 10, 10) and x.dtype == torch.uint8 and ok == [0]
    assert x.float().mean() > 180  # centre crop kept the bright middle
    assert [Path(p).name for p, _ in bad] == ["text.png", "missing.png"]
    assert "UnidentifiedImageError" in bad[0][1] and "FileNotFoundError" in bad[1][1]
    stretched, _, _ = read_images([wide], channels=3, image_size=[10, 20], crop=False)
    assert stretched.shape == (1, 3, 10, 20) and stretched[0, :, :, 0].float().mean() < 30  # dark edge kept


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        load_data(cfg_for(tmp_path, tmp_path / "nope").dataset)
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="class folder"):
        load_data(cfg_for(tmp_path, tmp_path / "flat").dataset)
    write_folder(tmp_path / "train", corrupt=False)
    write_folder(tmp_path / "test", corrupt=False)
    (tmp_path / "test" / "fish").rename(tmp_path / "test" / "bird")
    with pytest.raises(DatasetError, match="same class folders"):
        load_data(cfg_for(tmp_path, tmp_path / "train", f"dataset.test_root={tmp_path / 'test'}").dataset)


def test_separate_test_root_and_given_statistics(tmp_path):
    write_folder(tmp_path / "train", corrupt=False)
    write_folder(tmp_path / "test", per_class=4, corrupt=False, seed=1)
    data = load_data(cfg_for(tmp_path, tmp_path / "train", f"dataset.test_root={tmp_path / 'test'}",
                             "dataset.mean=[0.5,0.5,0.5]", "dataset.std=[0.25,0.25,0.25]").dataset)
    assert data.n_train == 36 and len(data.test) == 12
    assert all(p.startswith(str(tmp_path / "test")) for p in data.extras["test_paths"])
    assert float(data.train.x.min()) >= -2.0 - 1e-6 and float(data.train.x.max()) <= 2.0 + 1e-6


def test_image_folder_end_to_end_class_names_in_queries_csv(tmp_path, store):
    from mlflow import MlflowClient

    from alframe.loop.experiment import run_experiment

    write_folder(tmp_path / "photos", per_class=20)
    cfg = compose_shared(["dataset=image_folder", f"dataset.root={tmp_path / 'photos'}", "dataset.image_size=16",
                          "dataset.skip_bad_files=true", "dataset.test_size=12", "trainer.max_epochs=3",
                          "loop.initial_size=6", "loop.initial_balanced=true", "loop.query_size=4", "loop.rounds=1",
                          "mlflow.experiment_name=image_folder"], tmp_path / "out", store)
    res = run_experiment(cfg, tmp_path / "out" / "job")
    assert [h["n_labelled"] for h in res.history] == [6, 10]
    with (res.run_dir / "queries.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["class_name"] for r in rows} <= set(CLASSES)
    initial = [r for r in rows if r["round"] == "0"]
    assert sorted(r["class_name"] for r in initial) == sorted(CLASSES * 2)  # balanced: 2 per class
    assert all(r["class_name"] == CLASSES[int(r["label"])] for r in rows)
    assert MlflowClient(res.tracking_uri).get_run(res.run_id).data.tags["dataset"] == "image_folder"


# --------------------------------------------------------------------------- unlabelled
def ucfg(tmp_path, root, *extra):
    return compose(["dataset=unlabelled_folder", f"dataset.root={root}", "dataset.classes=[cat,dog,fish]",
                    "dataset.image_size=16", *extra], tmp_path / "out")


def test_unlabelled_folder_has_no_stored_labels_and_reads_seed_labels(tmp_path):
    files = write_unlabelled(tmp_path / "pool")
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(f"file,label\n{files[3].relative_to(tmp_path / 'pool')},dog\n{files[0]},2\n")
    data = load_data(ucfg(tmp_path, tmp_path / "pool", f"dataset.seed_labels={seeds}").dataset)
    assert data.targets is None and (data.train.y == -1).all()
    assert data.n_train == 15 and data.class_names == CLASSES and len(data.val_idx) == 0
    assert data.extras["paths"] == [str(f) for f in files]  # recursive, sorted: index = file
    assert data.extras["seed_idx"].tolist() == [0, 3] and data.extras["seed_labels"].tolist() == [2, 1]
    assert len(data.test) == 0
    # The stored oracle refuses: only a person can label this pool.
    from alframe.oracles.stored import StoredOracle

    with pytest.raises(ValueError, match="no stored labels"):
        StoredOracle().setup(data, tmp_path)


def test_unlabelled_folder_errors(tmp_path):
    files = write_unlabelled(tmp_path / "pool")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"file,label\n{files[1].name},horse\n")
    with pytest.raises(DatasetError, match="line 2: .* is not a readable image"):
        load_data(ucfg(tmp_path, tmp_path / "pool", f"dataset.seed_labels={bad}").dataset)
    bad.write_text(f"file,label\n{files[1].relative_to(tmp_path / 'pool')},horse\n")
    with pytest.raises(DatasetError, match="label 'horse' is not one of the classes"):
        load_data(ucfg(tmp_path, tmp_path / "pool", f"dataset.seed_labels={bad}").dataset)
    from alframe.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 2 distinct class names"):
        load_data(compose(["dataset=unlabelled_folder", f"dataset.root={tmp_path / 'pool'}",
                           "dataset.classes=[cat]"], tmp_path / "out").dataset)
    (tmp_path / "pool" / "batch1" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DatasetError, match="broken.jpg"):
        load_data(ucfg(tmp_path, tmp_path / "pool").dataset)
    data = load_data(ucfg(tmp_path, tmp_path / "pool", "dataset.skip_bad_files=true").dataset)
    assert data.n_train == 15


def test_unlabelled_folder_with_a_labelled_test_folder(tmp_path):
    write_unlabelled(tmp_path / "pool")
    write_folder(tmp_path / "test", per_class=3, corrupt=False, seed=2)
    (tmp_path / "test" / "cat").rename(tmp_path / "test" / "aa_cat_moved")
    with pytest.raises(DatasetError, match="not in dataset.classes"):
        load_data(ucfg(tmp_path, tmp_path / "pool", f"dataset.test_root={tmp_path / 'test'}").dataset)
    (tmp_path / "test" / "aa_cat_moved").rename(tmp_path / "test" / "cat")
    (tmp_path / "test" / "cat").rename(tmp_path / "test" / "zcat")
    with pytest.raises(DatasetError):
        load_data(ucfg(tmp_path, tmp_path / "pool", f"dataset.test_root={tmp_path / 'test'}").dataset)
    (tmp_path / "test" / "zcat").rename(tmp_path / "test" / "cat")
    import shutil

    shutil.rmtree(tmp_path / "test" / "dog")  # a test folder may cover only some classes
    data = load_data(ucfg(tmp_path, tmp_path / "pool", f"dataset.test_root={tmp_path / 'test'}").dataset)
    assert len(data.test) == 6 and sorted(set(data.test.y.tolist())) == [0, 2]  # cat, fish in classes order


def test_unlabelled_folder_annotation_job_with_the_files_oracle(tmp_path, store):
    """The real case: no labels anywhere; a person fills labels.csv, the run resumes and trains."""
    import math

    from alframe.loop.experiment import run_experiment

    info = write_folder(tmp_path / "_src", per_class=8, corrupt=False)
    truth = {}
    for k, (p, (_, c)) in enumerate(sorted(info["files"].items())):
        dst = tmp_path / "pool" / f"photo_{k:03d}.png"
        dst.parent.mkdir(exist_ok=True)
        Path(p).rename(dst)
        truth[str(dst)] = c
    overrides = ["dataset=unlabelled_folder", f"dataset.root={tmp_path / 'pool'}", "dataset.classes=[cat,dog,fish]",
                 "dataset.image_size=16", "oracle=files", "trainer.max_epochs=2", "loop.initial_size=6",
                 "loop.query_size=4", "loop.rounds=1", "mlflow.experiment_name=unlabelled"]
    job = tmp_path / "out" / "job"
    first = run_experiment(compose_shared(overrides, tmp_path / "out", store), job)
    assert first.status == "pending" and first.history == []

    from alframe.data.base import load_data as load

    paths = load(compose_shared(overrides, tmp_path / "out", store).dataset).extras["paths"]

    def fill(round_dir: Path) -> None:  # the person: the true class name of each queried file
        with (round_dir / "labels.csv").open() as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            r["label"] = CLASSES[truth[paths[int(r["index"])]]]
        with (round_dir / "labels.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    fill(job / "queries" / "round_0")
    second = run_experiment(compose_shared([*overrides, "loop.resume=true"], tmp_path / "out", store), job)
    assert second.status == "pending" and [h["n_labelled"] for h in second.history] == [6]
    assert math.isnan(second.history[0]["test_accuracy"])  # no test folder: nothing to measure
    with (job / "queries.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert all(r["class_name"] == CLASSES[truth[paths[int(r["index"])]]] for r in rows)


def test_seed_labels_count_towards_the_initial_set(tmp_path, store):
    """Labels a person already has (dataset.seed_labels) are round-0 labels; the oracle is asked
    only for the rest of loop.initial_size."""
    from alframe.loop.experiment import run_experiment
    from alframe.rundir.state import PoolState

    files = write_unlabelled(tmp_path / "pool")
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(f"file,label\n{files[3].relative_to(tmp_path / 'pool')},dog\n{files[0]},fish\n")
    overrides = ["dataset=unlabelled_folder", f"dataset.root={tmp_path / 'pool'}", "dataset.classes=[cat,dog,fish]",
                 "dataset.image_size=16", f"dataset.seed_labels={seeds}", "oracle=files", "trainer.max_epochs=1",
                 "loop.initial_size=5", "loop.query_size=2", "loop.rounds=1", "mlflow.experiment_name=seeded"]
    job = tmp_path / "out" / "job"
    res = run_experiment(compose_shared(overrides, tmp_path / "out", store), job)
    assert res.status == "pending"
    state = PoolState.load(job)
    assert state.labelled_idx.tolist() == [0, 3] and state.labels[[0, 3]].tolist() == [2, 1]
    assert (state.labelled_round[[0, 3]] == 0).all()
    with (job / "queries" / "round_0" / "labels.csv").open() as f:
        asked = [int(r["index"]) for r in csv.DictReader(f)]
    assert len(asked) == 3 and not {0, 3} & set(asked)  # 5 initial - 2 seed labels


def test_seed_labels_covering_the_initial_set_skip_round_0_requests(tmp_path, store):
    from alframe.loop.experiment import run_experiment

    files = write_unlabelled(tmp_path / "pool")
    seeds = tmp_path / "seeds.csv"
    rows = "".join(f"{f.relative_to(tmp_path / 'pool')},{CLASSES[i % 3]}\n" for i, f in enumerate(files[:6]))
    seeds.write_text("file,label\n" + rows)
    overrides = ["dataset=unlabelled_folder", f"dataset.root={tmp_path / 'pool'}", "dataset.classes=[cat,dog,fish]",
                 "dataset.image_size=16", f"dataset.seed_labels={seeds}", "oracle=files", "trainer.max_epochs=1",
                 "loop.initial_size=4", "loop.query_size=2", "loop.rounds=1", "mlflow.experiment_name=seeded2"]
    res = run_experiment(compose_shared(overrides, tmp_path / "out", store), tmp_path / "out" / "job")
    # Round 0 trained on the 6 seed labels at once; the oracle's first request is round 1.
    assert res.status == "pending" and [h["n_labelled"] for h in res.history] == [6]
    assert (tmp_path / "out" / "job" / "queries" / "round_1" / "labels.csv").is_file()
    assert not (tmp_path / "out" / "job" / "queries" / "round_0").exists()
