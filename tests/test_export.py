"""alframe-export, alframe-predict and the MLflow model of a finished digits simulation.

One small run (module fixture) is exported in every format; each exported label is checked
against the pool state (oracle labels), the run's own last model (machine labels) and the
stored digits (pixels, accuracy); the MLflow model is loaded back with ``mlflow.pyfunc``.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from sklearn.datasets import load_digits

from alframe.cli import export, predict
from alframe.data.base import stratified_split
from alframe.export.mlmodel import Preprocessing, predict_pixels
from alframe.export.runfolder import load_run
from alframe.loop.experiment import run_experiment
from alframe.reporting.runs import load_runs
from alframe.reporting.tables import machine_label_table
from alframe.rundir.state import PoolState

from .conftest import compose


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mlflow_template):
    """A finished digits run (20 + 1 x 10 labels, 15 epochs), every round's model logged."""
    out = tmp_path_factory.mktemp("export_run")
    shutil.copy(mlflow_template, out / "mlflow.db")
    cfg = compose(["trainer.max_epochs=15", "loop.initial_size=20", "loop.query_size=10", "loop.rounds=1",
                   "mlflow.log_model_every_round=true"], out)
    res = run_experiment(cfg, out / "runs" / "job")
    assert res.status == "finished"
    return res


def raw_digits_split():
    """The digits train source and test set as stored pixels (0..16) and labels, split as alframe does."""
    b = load_digits()
    train_idx, test_idx = stratified_split(b.target, 0.25, 0)
    return b.images[train_idx], b.target[train_idx], b.images[test_idx], b.target[test_idx]


def last_model_probs(run_dir: Path, idx: np.ndarray) -> torch.Tensor:
    run = load_run(run_dir, need_model=True)
    with torch.no_grad():
        return torch.softmax(run.net(run.data.train.x[torch.as_tensor(idx)]), dim=1)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_csv_has_oracle_labels_and_the_last_models_machine_labels(finished, tmp_path):
    state = PoolState.load(finished.run_dir)
    _, y_train, _, _ = raw_digits_split()
    assert export.main([str(finished.run_dir), "--format", "csv", "--out", str(tmp_path / "all")]) == 0
    rows = read_csv(tmp_path / "all" / "labels.csv")
    assert list(rows[0]) == ["file", "label", "source", "confidence", "round"]
    assert [r["file"] for r in rows] == [str(i) for i in range(state.n)]  # digits: the index
    by_source = {s: [int(r["file"]) for r in rows if r["source"] == s] for s in ("stored", "machine", "validation")}
    assert by_source["stored"] == state.labelled_idx.tolist() and len(by_source["stored"]) == 30
    assert by_source["machine"] == state.pool_idx.tolist()  # exactly the rest of the pool
    assert len(by_source["validation"]) == 100
    for r in rows:
        i = int(r["file"])
        if r["source"] == "stored":
            assert (r["label"], r["round"], r["confidence"]) == (str(state.labels[i]), str(state.labelled_round[i]), "")
            assert int(r["label"]) == y_train[i]  # the stored oracle's label is the true digit
        elif r["source"] == "validation":
            assert int(r["label"]) == y_train[i] and r["round"] == ""
    pool = state.pool_idx
    conf, pred = last_model_probs(finished.run_dir, pool).max(dim=1)
    machine = {int(r["file"]): r for r in rows if r["source"] == "machine"}
    assert [int(machine[i]["label"]) for i in pool] == pred.tolist()
    np.testing.assert_allclose([float(machine[i]["confidence"]) for i in pool], conf.numpy(), atol=2e-6)

    # --accept-above: machine labels only at confidence >= t, the rest unlabelled (label empty)
    t = float(np.median(conf.numpy()))
    assert export.main([str(finished.run_dir), "--out", str(tmp_path / "t"), "--accept-above", str(t)]) == 0
    kept = read_csv(tmp_path / "t" / "labels.csv")
    keep_idx = {int(r["file"]) for r in kept if r["source"] == "machine"}
    assert keep_idx == set(pool[conf.numpy() >= t].tolist())
    rest = [r for r in kept if r["source"] == "unlabelled"]
    assert len(rest) == len(pool) - len(keep_idx) and all(r["label"] == "" for r in rest)
    assert [r for r in kept if r["source"] == "stored"] == [r for r in rows if r["source"] == "stored"]


def test_machine_label_evidence_in_the_report_matches_the_export(finished, tmp_path):
    """The loop's final machine_labels/t0.9 metrics (read back from MLflow by alframe-report)
    equal what --accept-above 0.9 exports, scored against the stored labels."""
    _, y_train, _, _ = raw_digits_split()
    runs = load_runs(finished.tracking_uri, finished.experiment_name)
    table = machine_label_table(runs)
    row = table[table.threshold == 0.9].iloc[0]
    assert export.main([str(finished.run_dir), "--out", str(tmp_path), "--accept-above", "0.9"]) == 0
    machine = [r for r in read_csv(tmp_path / "labels.csv") if r["source"] == "machine"]
    assert row["count"] == len(machine)
    if machine:
        acc = np.mean([int(r["label"]) == y_train[int(r["file"])] for r in machine])
        assert row["accuracy"] == pytest.approx(acc)
    pool = PoolState.load(finished.run_dir).n_pool
    assert row["coverage"] == pytest.approx(len(machine) / pool)


def test_imagefolder_writes_each_labelled_image_under_its_class(finished, tmp_path):
    state = PoolState.load(finished.run_dir)
    x_train, _, _, _ = raw_digits_split()
    out = tmp_path / "folder"
    assert export.main([str(finished.run_dir), "--format", "imagefolder", "--out", str(out)]) == 0
    rows = read_csv(Path(export.export(finished.run_dir, "csv", tmp_path / "c")[0]) / "labels.csv")
    expected = {(r["label"], f"{r['file']}.png") for r in rows if r["source"] in ("stored", "machine")}
    written = {(p.parent.name, p.name) for p in out.glob("*/*.png")}
    assert written == expected and len(written) == state.n_labelled + state.n_pool
    i = int(state.labelled_idx[0])
    png = np.asarray(Image.open(out / str(state.labels[i]) / f"{i}.png"))
    assert np.abs(png.astype(int) - x_train[i] / 16 * 255).max() <= 0.51  # the digit itself, not a render
    assert export.main([str(finished.run_dir), "--format", "imagefolder", "--out", str(out)]) == 2  # not empty


def test_label_studio_tasks_hold_annotations_and_predictions(finished, tmp_path):
    state = PoolState.load(finished.run_dir)
    assert export.main([str(finished.run_dir), "--format", "label-studio", "--out", str(tmp_path),
                        "--accept-above", "0.5"]) == 0
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert len(tasks) == state.n_labelled + state.n_pool  # validation hold-out left out
    by_index = {t["data"]["index"]: t for t in tasks}
    for i in state.labelled_idx:
        (ann,) = by_index[int(i)]["annotations"]
        assert ann["result"][0]["value"]["choices"] == [str(state.labels[i])] and "predictions" not in by_index[int(i)]
    conf, pred = last_model_probs(finished.run_dir, state.pool_idx).max(dim=1)
    for i, c, p in zip(state.pool_idx, conf.tolist(), pred.tolist(), strict=True):
        t = by_index[int(i)]
        assert "annotations" not in t
        if c >= 0.5:
            assert t["predictions"][0]["result"][0]["value"]["choices"] == [str(p)]
            assert t["predictions"][0]["score"] == pytest.approx(c, abs=1e-6)
        else:
            assert "predictions" not in t
        assert Path("/" + t["data"]["image"].split("?d=", 1)[1]).is_file()
    assert '<Choice value="9" hotkey="9"/>' in (tmp_path / "label_studio_config.xml").read_text()  # key 9 = class 9


def test_mlflow_pyfunc_model_returns_class_names_at_the_logged_accuracy(finished):
    """The logged model, loaded with mlflow.pyfunc and given raw pixels in [0, 1], reproduces
    the test accuracy the run logged."""
    _, _, x_test, y_test = raw_digits_split()
    client = MlflowClient(finished.tracking_uri)
    run = client.get_run(finished.run_id)
    arts = {a.path for a in client.list_artifacts(finished.run_id)}
    assert {"model", "models"} <= arts
    assert {a.path for a in client.list_artifacts(finished.run_id, "models")} == {"models/round_0", "models/round_1"}
    model = mlflow.pyfunc.load_model(f"{run.info.artifact_uri}/model")
    names = model.predict((x_test[:, None] / 16.0).astype(np.float32))
    assert names.shape == (len(y_test),) and set(names) <= {str(c) for c in range(10)}
    acc = float(np.mean(names.astype(int) == y_test))
    assert acc == pytest.approx(run.data.metrics["final_accuracy"], abs=1e-6)  # float32 metric
    meta = model.metadata
    assert meta.metadata["class_names"] == [str(c) for c in range(10)]
    prep = meta.metadata["preprocessing"]
    assert prep["input_shape"] == [1, 8, 8] and len(prep["mean"]) == 1 and len(prep["std"]) == 1
    assert meta.signature.inputs.inputs[0].shape == (-1, 1, 8, 8)
    with pytest.raises(Exception, match="8"):  # a wrong image size is refused by the signature or the model
        model.predict(np.zeros((2, 1, 9, 9), np.float32))


def test_predict_labels_a_folder_of_new_images(finished, tmp_path, capsys):
    _, _, x_test, _ = raw_digits_split()
    folder = tmp_path / "new"
    (folder / "sub").mkdir(parents=True)
    pixels = np.round(x_test[:12] / 16 * 255).astype(np.uint8)
    names = [f"{k:02d}.png" if k < 6 else f"sub/{k:02d}.png" for k in range(12)]
    for k, name in enumerate(names):
        Image.fromarray(pixels[k]).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "pred.csv"
    assert predict.main([str(finished.run_dir), str(folder), "--out", str(out)]) == 0
    rows = read_csv(out)
    assert [r["file"] for r in rows] == sorted(names)
    run = load_run(finished.run_dir, need_model=True)
    cls, conf = predict_pixels(run.net, Preprocessing.from_data(run.data), pixels[:, None] / 255.0)
    got = {r["file"]: (r["label"], float(r["confidence"])) for r in rows}
    for k, name in enumerate(names):
        assert got[name][0] == str(cls[k]) and got[name][1] == pytest.approx(float(conf[k]), abs=1e-5)
    assert predict.main([str(tmp_path / "nope"), str(folder)]) == 2
    assert "alframe-predict: error:" in capsys.readouterr().err
    assert predict.main([str(finished.run_dir), str(tmp_path / "empty_missing")]) == 2


def test_export_errors_are_one_line(tmp_path, capsys):
    assert export.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alframe-export: error:") and "does not exist" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert export.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "config.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main([str(tmp_path), "--format", "xml", "--out", str(tmp_path / "o")])
    with pytest.raises(export.ConfigError, match="accept-above 1.5"):
        export.export(tmp_path, "csv", tmp_path / "o", accept_above=1.5)


def test_waiting_run_without_a_model_exports_its_pool_unlabelled(tmp_path, store, capsys):
    """oracle=files stops at once for the initial batch: no label, no model yet; the export still
    lists every image of the folder, by its path, unlabelled."""
    b = load_digits()
    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    names = [f"a/{k}.png" if k % 2 else f"{k}.png" for k in range(8)]
    for k, name in enumerate(names):
        Image.fromarray(np.round(b.images[k] / 16 * 255).astype(np.uint8)).save(photos / name)
    cfg = compose(["dataset=unlabelled_folder", f"dataset.root={photos}", "dataset.classes=[a,b]",
                   "dataset.image_size=8", "dataset.channels=1", "oracle=files", "loop.initial_size=4"], tmp_path)
    res = run_experiment(cfg, tmp_path / "job")
    assert res.status == "pending" and not (res.run_dir / "last_model.pt").exists()
    assert export.main([str(res.run_dir), "--out", str(tmp_path / "out")]) == 0
    assert "No model has been trained" in capsys.readouterr().out
    rows = read_csv(tmp_path / "out" / "labels.csv")
    assert [r["file"] for r in rows] == sorted(names)
    assert all((r["label"], r["source"], r["confidence"]) == ("", "unlabelled", "") for r in rows)
    assert predict.main([str(res.run_dir), str(photos)]) == 2  # nothing to predict with yet
