"""The files oracle: batches written for another tool, labels imported from a filled CSV or a
Label Studio export on resume, every validation error, nothing half-imported."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from mlflow import MlflowClient

from alframe.data.digits import digits
from alframe.loop import Experiment
from alframe.oracles import FilesOracle, LabelImportError, LabelRequest
from alframe.state import PoolState

from .conftest import compose

IDX = np.array([3, 8, 15, 42])


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture
def oracle(data, tmp_path):
    o = FilesOracle()
    o.setup(data, tmp_path)
    return o


def request(round=2):
    return LabelRequest(round=round, idx=IDX, predicted=np.array([1, 2, 3, 4]),
                        confidence=np.array([0.91, 0.5, 0.33, 0.75]))


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows, fields=("index", "file", "suggested_label", "confidence", "label")):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def test_first_call_writes_the_batch_and_stays_pending(oracle, tmp_path, capsys):
    res = oracle.label(request())
    assert res.pending and len(res.idx) == 0
    d = tmp_path / "queries" / "round_2"
    rows = read_csv(d / "labels.csv")
    assert [int(r["index"]) for r in rows] == IDX.tolist()
    assert [r["suggested_label"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["label"] for r in rows] == [""] * 4
    assert rows[0]["confidence"] == "0.9100"
    for r in rows:
        png = d / r["file"]
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tasks = json.loads((d / "label_studio_tasks.json").read_text())
    assert [t["data"]["index"] for t in tasks] == IDX.tolist()
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == ["1"]
    assert tasks[0]["data"]["image"].startswith("/data/local-files/?d=")
    xml = (d / "label_studio_config.xml").read_text()
    assert xml.count("<Choice ") == 10 and 'name="label"' in xml
    out = capsys.readouterr().out
    assert "labels.csv" in out and "loop.resume=true" in out
    # Asking again before anything is filled: still pending, the CSV is not overwritten.
    rows[0]["label"] = ""
    assert oracle.label(request()).pending


def test_csv_round_trip(oracle, data, tmp_path):
    oracle.label(request())
    path = tmp_path / "queries" / "round_2" / "labels.csv"
    rows = read_csv(path)
    truth = data.targets[IDX]
    for r, y in zip(rows, truth, strict=True):
        r["label"] = str(y)
    rows[2]["label"] = "skip"
    write_csv(path, rows)
    res = oracle.label(request())
    assert not res.pending
    assert res.idx.tolist() == [3, 8, 42]
    np.testing.assert_array_equal(res.labels, truth[[0, 1, 3]])
    assert res.info["skipped"] == 1.0


def test_label_studio_json_and_json_min_round_trip(oracle, data, tmp_path):
    oracle.label(request())
    d = tmp_path / "queries" / "round_2"
    tasks = json.loads((d / "label_studio_tasks.json").read_text())
    truth = data.targets[IDX]
    export = []
    for n, (t, y) in enumerate(zip(tasks, truth, strict=True)):
        older = {"id": 1, "created_at": "2026-01-01T10:00:00Z", "was_cancelled": False,
                 "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                             "value": {"choices": ["0"]}}]}
        newer = {"id": 2, "created_at": "2026-01-02T10:00:00Z", "was_cancelled": False,
                 "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                             "value": {"choices": [str(y)]}}]}
        cancelled = {"id": 3, "created_at": "2026-01-03T10:00:00Z", "was_cancelled": True, "result": []}
        export.append({"id": 100 + n, "data": t["data"], "annotations": [older, newer, cancelled]})
    (d / "export.json").write_text(json.dumps(export))
    res = oracle.label(request())
    assert res.idx.tolist() == IDX.tolist()
    np.testing.assert_array_equal(res.labels, truth)  # the latest non-cancelled annotation wins

    (d / "export.json").write_text(json.dumps(
        [{"id": 7, "image": t["data"]["image"], "index": t["data"]["index"], "label": str(y)}
         for t, y in zip(tasks, truth, strict=True)]))
    res = oracle.label(request())
    np.testing.assert_array_equal(res.labels, truth)


def fill_and_import(oracle, tmp_path, mutate, fields=("index", "file", "suggested_label", "confidence", "label")):
    oracle.label(request())
    path = tmp_path / "queries" / "round_2" / "labels.csv"
    rows = read_csv(path)
    for r in rows:
        r["label"] = "5"
    rows = mutate(rows)
    write_csv(path, rows, fields)
    with pytest.raises(LabelImportError) as e:
        oracle.label(request())
    return str(e.value)


def test_csv_validation_errors_name_the_rows(oracle, tmp_path):
    def unknown(rows):
        rows[1]["label"] = "cat"
        rows[3]["label"] = "10"
        return rows
    msg = fill_and_import(oracle, tmp_path, unknown)
    assert "line 3 (index 8): unknown class 'cat'" in msg
    assert "line 5 (index 42): unknown class '10'" in msg
    assert "allowed classes: 0=0" in msg and "nothing was imported" in msg


def test_csv_missing_extra_duplicate_empty_and_bad_index(oracle, tmp_path):
    def broken(rows):
        dup = dict(rows[0])
        extra = dict(rows[0], index="999")
        bad = dict(rows[0], index="x1")
        rows[2]["label"] = ""
        return [rows[0], dup, rows[2], rows[3], extra, bad]  # index 8 missing
    msg = fill_and_import(oracle, tmp_path, broken)
    assert "line 3: duplicate row for index 3 (already on line 2)" in msg
    assert "line 4 (index 15): the label is empty" in msg
    assert "line 6: index 999 was not queried in round 2 (extra row)" in msg
    assert "line 7: index 'x1' is not an integer" in msg
    assert "missing rows for indices [8]" in msg
    assert "5 problem(s)" in msg


def test_csv_without_label_column(oracle, tmp_path):
    msg = fill_and_import(oracle, tmp_path, lambda rows: rows, fields=("index", "file", "class"))
    assert "missing column(s) ['label']" in msg


def test_label_studio_errors(oracle, tmp_path):
    oracle.label(request())
    d = tmp_path / "queries" / "round_2"
    (d / "export.json").write_text("{not json")
    with pytest.raises(LabelImportError, match="not a readable JSON"):
        oracle.label(request())
    (d / "export.json").write_text(json.dumps({"tasks": []}))
    with pytest.raises(LabelImportError, match="JSON list of tasks"):
        oracle.label(request())
    tasks = [{"id": 11, "data": {"index": 3}, "annotations": [{"result": [{"value": {"choices": ["dog"]}}]}]},
             {"id": 12, "data": {"index": 8}, "annotations": []},
             {"id": 13, "data": {"index": 8}, "annotations": [{"result": [{"value": {"choices": ["1"]}}]}]},
             {"id": 14, "data": {"index": 15}, "annotations": [{"result": [{"value": {"choices": ["1"]}}]}]}]
    (d / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(LabelImportError) as e:
        oracle.label(request())
    msg = str(e.value)
    assert "task 1 (id 11) (index 3): unknown class 'dog'" in msg
    assert "task 2 (id 12) (index 8): the label is empty" in msg
    assert "task 3 (id 13): duplicate row for index 8 (already on task 2 (id 12))" in msg
    assert "missing rows for indices [42]" in msg


@pytest.mark.usefixtures("store")  # a copied, initialised MLflow store
def test_files_oracle_through_the_loop(tmp_path):
    """Run stops pending; a bad CSV stops the resumed run with nothing recorded; the fixed CSV
    and then a Label Studio export continue the same MLflow run to the end."""
    y = digits().targets
    over = ["oracle=files", "trainer.max_epochs=2", "loop.initial_size=6", "loop.query_size=4", "loop.rounds=1"]
    res = Experiment(compose(over, tmp_path), tmp_path / "job").run()
    assert res.status == "pending"
    client = MlflowClient(res.tracking_uri)

    def where() -> tuple[str, str]:  # MLflow status and alframe.status tag, told apart at a glance
        run = client.get_run(res.run_id)
        return run.info.status, run.data.tags["alframe.status"]

    assert where() == ("RUNNING", "waiting_for_labels")
    d0 = res.run_dir / "queries" / "round_0"
    rows = read_csv(d0 / "labels.csv")
    assert len(rows) == 6 and all(r["suggested_label"] == "" for r in rows)

    resume = [*over, "loop.resume=true"]
    rows[0]["label"] = "ten"
    for r in rows[1:]:
        r["label"] = str(y[int(r["index"])])
    write_csv(d0 / "labels.csv", rows)
    with pytest.raises(LabelImportError, match="line 2 .*unknown class 'ten'"):
        Experiment(compose(resume, tmp_path), tmp_path / "job2").run()
    assert PoolState.load(res.run_dir).n_labelled == 0  # nothing half-imported
    assert where() == ("FAILED", "failed")

    rows[0]["label"] = str(y[int(rows[0]["index"])])
    write_csv(d0 / "labels.csv", rows)
    res2 = Experiment(compose(resume, tmp_path), tmp_path / "job3").run()
    assert res2.status == "pending" and res2.run_id == res.run_id
    assert where() == ("RUNNING", "waiting_for_labels")
    d1 = res.run_dir / "queries" / "round_1"
    tasks = json.loads((d1 / "label_studio_tasks.json").read_text())
    assert len(tasks) == 4 and all(t["data"]["suggested_label"] is not None for t in tasks)
    (d1 / "export.json").write_text(json.dumps([
        {"id": k, "data": t["data"], "annotations": [{"result": [
            {"type": "choices", "value": {"choices": [str(y[t["data"]["index"]])]}}]}]}
        for k, t in enumerate(tasks)]))
    res3 = Experiment(compose(resume, tmp_path), tmp_path / "job4").run()
    assert res3.status == "finished" and res3.run_id == res.run_id
    state = PoolState.load(res.run_dir)
    assert state.n_labelled == 10
    np.testing.assert_array_equal(state.labels[state.labelled_idx], y[state.labelled_idx])
    received = sorted((m.step, m.value) for m in client.get_metric_history(res.run_id, "labels_received"))
    assert received == [(6, 6.0), (10, 4.0)]
    assert where() == ("FINISHED", "finished")
