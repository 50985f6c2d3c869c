"""The files oracle: batches written for another tool, labels imported from a filled CSV or a
Label Studio export on resume, every validation error, nothing half-imported."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from alframe.data.digits import digits
from alframe.loop.experiment import Experiment
from alframe.oracles import FilesOracle, LabelImportError, LabelRequest
from alframe.oracles.files import CSV_COLUMNS
from alframe.oracles.label_studio import LETTERS, hotkeys, labelling_config
from alframe.rundir.state import PoolState

from .conftest import compose

IDX = np.array([3, 8, 15, 42])
LS_DIR = Path(__file__).parent / "data" / "label_studio"  # real Label Studio 1.23.2 exports, see README.md
# The table of tests/data/label_studio/README.md: what a correct import gives.
ROUND0 = {24: 6, 57: 9, 101: 8, 238: 5, 362: 1, 415: 4, 680: 3, 849: 4, 1097: 8, 1140: 8}
ROUND1 = {697: 0, 821: 0, 959: 4, 1130: 3, 1182: 6}


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


def write_csv(path, rows, fields=tuple(CSV_COLUMNS)):
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


def test_csv_rows_whose_file_and_index_disagree_are_refused(oracle, data, tmp_path):
    """A spreadsheet sort of one column puts labels on other images: refused, naming the lines."""
    oracle.label(request())
    path = tmp_path / "queries" / "round_2" / "labels.csv"
    rows = read_csv(path)
    for r in rows:
        r["label"] = str(data.targets[int(r["index"])])
    rows[0]["file"], rows[1]["file"] = rows[1]["file"], rows[0]["file"]
    write_csv(path, rows)
    with pytest.raises(LabelImportError) as e:
        oracle.label(request())
    assert "line 2 (index 3): has file 'images/8.png', not 'images/3.png' (the image of index 3)" in str(e.value)
    assert "line 3 (index 8): has file 'images/3.png', not 'images/8.png' (the image of index 8)" in str(e.value)
    assert "2 problem(s)" in str(e.value)


def test_label_studio_json_and_json_min_round_trip(oracle, data, tmp_path):
    oracle.label(request())
    d = tmp_path / "queries" / "round_2"
    tasks = json.loads((d / "label_studio_tasks.json").read_text())
    truth = data.targets[IDX]
    export = []
    for n, (t, y) in enumerate(zip(tasks, truth, strict=True)):
        skipped = {"id": 1, "created_at": "2026-01-01T09:00:00Z", "was_cancelled": True, "result": []}
        older = {"id": 2, "created_at": "2026-01-01T10:00:00Z", "was_cancelled": False,
                 "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                             "value": {"choices": ["0"]}}]}
        newer = {"id": 3, "created_at": "2026-01-02T10:00:00Z", "was_cancelled": False,
                 "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                             "value": {"choices": [str(y)]}}]}
        export.append({"id": 100 + n, "data": t["data"], "annotations": [newer, skipped, older]})
    (d / "export.json").write_text(json.dumps(export))
    res = oracle.label(request())
    assert res.idx.tolist() == IDX.tolist()
    np.testing.assert_array_equal(res.labels, truth)  # the latest annotation wins, whatever the order

    (d / "export.json").write_text(json.dumps(  # JSON-MIN: the task's data flattened into each record
        [{**t["data"], "id": 7, "label": str(y)} for t, y in zip(tasks, truth, strict=True)]))
    res = oracle.label(request())
    np.testing.assert_array_equal(res.labels, truth)


def fill_and_import(oracle, tmp_path, mutate, fields=tuple(CSV_COLUMNS)):
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


def test_csv_missing_extra_duplicate_and_bad_index(oracle, tmp_path):
    def broken(rows):
        dup = dict(rows[0])
        extra = dict(rows[0], index="999", file="images/999.png")
        bad = dict(rows[0], index="x1")
        rows[2]["label"] = ""  # not answered yet: pending, not an error
        return [rows[0], dup, rows[2], rows[3], extra, bad]  # index 8 missing
    msg = fill_and_import(oracle, tmp_path, broken)
    assert "line 3: duplicate row for index 3 (already on line 2)" in msg
    assert "line 6: index 999 was not queried in round 2 (extra row)" in msg
    assert "line 7: index 'x1' is not an integer" in msg
    assert "missing rows for indices [8]" in msg
    assert "4 problem(s)" in msg and "index 15" not in msg


def test_csv_without_label_column(oracle, tmp_path):
    msg = fill_and_import(oracle, tmp_path, lambda rows: rows, fields=("index", "file", "class", "run"))
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
    data = {t["data"]["index"]: t["data"] for t in json.loads((d / "label_studio_tasks.json").read_text())}

    def ann(*choices):
        return [{"result": [{"value": {"choices": list(choices)}}]}]

    tasks = [{"id": 11, "data": data[3], "annotations": ann("dog")},
             {"id": 12, "data": data[8], "annotations": []},
             {"id": 13, "data": data[8], "annotations": ann("1")},
             {"id": 14, "data": data[15], "annotations": [{"result": []}]},
             {"id": 15, "data": data[42], "annotations": ann("1", "2")}]
    (d / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(LabelImportError) as e:
        oracle.label(request())
    msg = str(e.value)
    assert "task 1 (id 11) (index 3): unknown class 'dog'" in msg
    assert "task 3 (id 13): duplicate row for index 8 (already on task 2 (id 12))" in msg
    assert "task 4 (id 14) (index 15): has a submitted annotation with no choice (not a skip)" in msg
    assert "task 5 (id 15) (index 42): has an annotation with 2 choices ['1', '2']: one class per task" in msg
    assert "4 problem(s)" in msg


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


# --------------------------------------------------------------------------- real Label Studio exports


def stamped(name, run):
    """The real export ``name`` with ``run`` as its tasks' ``data.run``: what Label Studio exports
    for tasks alframe writes now (task data is exported as imported; JSON-MIN flattens it into
    each record). The fixtures were made from tasks without a run id."""
    records = json.loads((LS_DIR / name).read_text())
    for rec in records:
        (rec["data"] if "data" in rec else rec)["run"] = run
    return records


def import_export(oracle, tmp_path, name, round, idx, labelled=None):
    """Import the real export ``name`` (stamped with the oracle's run id) as ``export.json`` of
    round ``round``'s folder."""
    d = tmp_path / "queries" / f"round_{round}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "export.json").write_text(json.dumps(stamped(name, oracle.run_id)))
    return oracle.label(LabelRequest(round=round, idx=np.array(sorted(idx)), labelled=labelled))


def as_dict(res):
    return dict(zip(res.idx.tolist(), res.labels.tolist(), strict=True))


def test_the_fixture_table_is_the_true_digits(data):
    assert all(int(data.targets[i]) == y for i, y in {**ROUND0, **ROUND1}.items())


@pytest.mark.parametrize("fmt", ["JSON", "JSON_MIN"])
def test_real_export_one_annotation_per_task(oracle, tmp_path, fmt, capsys):
    res = import_export(oracle, tmp_path, f"p1_export_{fmt}.json", 0, ROUND0)
    assert not res.pending and as_dict(res) == ROUND0 and res.info["skipped"] == 0.0
    assert f"Label Studio {fmt} export: 10 task(s)" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["JSON", "JSON_MIN"])
def test_real_export_with_skip_relabel_and_edit(oracle, tmp_path, fmt, capsys):
    """24: Skip button (cancelled annotation; JSON-MIN leaves the task out, so there 24 looks
    not labelled yet and stays pending); 57: labelled 1 then again 9; 101: labelled 2, then
    edited to 8."""
    res = import_export(oracle, tmp_path, f"edge_{fmt}.json", 0, ROUND0)
    want = {i: y for i, y in ROUND0.items() if i != 24}
    assert as_dict(res) == want
    assert 24 not in res.idx.tolist()
    out = capsys.readouterr().out
    if fmt == "JSON_MIN":
        assert res.pending and res.info["skipped"] == 0.0
        assert "1 with several annotations (the latest by updated_at was used)" in out
        assert "9 of 10 labelled; 1 still pending: indices [24]" in out
        assert "export JSON to have the skips counted" in out
    else:
        assert not res.pending and res.info["skipped"] == 1.0
        assert "1 skipped, back to the pool: indices [24]" in out
        assert "1 with several annotations" in out  # 57; the edit of 101 is one annotation


@pytest.mark.parametrize("fmt", ["JSON", "JSON_MIN"])
def test_real_export_of_a_project_reused_across_rounds(oracle, tmp_path, fmt, capsys):
    labelled = np.full(1797, -1, dtype=np.int64)
    for i, y in ROUND0.items():
        labelled[i] = y
    res = import_export(oracle, tmp_path, f"p1_all_{fmt}.json", 1, ROUND1, labelled=labelled)
    assert as_dict(res) == ROUND1 and res.info["skipped"] == 0.0
    assert "10 row(s) of samples labelled earlier ignored (same label)" in capsys.readouterr().out

    # A different label for a sample labelled earlier: an error naming the index and both labels.
    labelled[24] = 5
    with pytest.raises(LabelImportError) as e:
        import_export(oracle, tmp_path, f"p1_all_{fmt}.json", 1, ROUND1, labelled=labelled)
    assert "index 24 is already labelled '5', this row says '6'" in str(e.value)
    assert "1 problem(s)" in str(e.value)

    # Nothing labelled before: the round-0 rows are of samples this run never queried.
    with pytest.raises(LabelImportError) as e:
        import_export(oracle, tmp_path, f"p1_all_{fmt}.json", 1, ROUND1, labelled=np.full(1797, -1))
    msg = str(e.value)
    assert "10 problem(s)" in msg and "index 24 was not queried in round 0 (extra row)" in msg


def test_reused_project_skip_then_queried_again(oracle, tmp_path):
    """24 was skipped in round 0 (still skipped: ignored) and queried again in round 2, where its
    new task is the one read; labelling it in its old task instead is refused."""
    oracle.write_batch(LabelRequest(round=0, idx=np.array(sorted(ROUND0))))
    edge = stamped("edge_JSON.json", oracle.run_id)
    labelled = np.full(1797, -1, dtype=np.int64)
    for i, y in ROUND0.items():
        if i != 24:
            labelled[i] = y
    again = json.loads(json.dumps(edge[0]))  # task of 24, as imported again in round 2
    again["id"], again["data"]["round"] = 99, 2
    again["data"]["image"] = again["data"]["image"].replace("round_0", "round_2")
    again["annotations"][0].update(was_cancelled=False, updated_at="2026-11-30T10:00:00Z", result=[
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["6"]}}])
    d = tmp_path / "queries" / "round_2"
    d.mkdir(parents=True)
    (d / "export.json").write_text(json.dumps([*edge, again]))
    res = oracle.label(LabelRequest(round=2, idx=np.array([24]), labelled=labelled))
    assert as_dict(res) == {24: 6}

    edge[0]["annotations"][0].update(was_cancelled=False, updated_at="2026-11-30T10:00:00Z",
                                     result=again["annotations"][0]["result"])
    (d / "export.json").write_text(json.dumps(edge))
    with pytest.raises(LabelImportError, match="index 24 was skipped in round 0 and is back in the pool"):
        oracle.label(LabelRequest(round=2, idx=np.array([821]), labelled=labelled))


def test_json_task_without_annotation_stays_pending(oracle, tmp_path, capsys):
    tasks = stamped("p1_export_JSON.json", oracle.run_id)
    tasks[0]["annotations"] = []  # exported with "all tasks": never labelled
    d = tmp_path / "queries" / "round_0"
    d.mkdir(parents=True)
    (d / "export.json").write_text(json.dumps(tasks[:-1]))  # and the last task not exported
    res = oracle.label(LabelRequest(round=0, idx=np.array(sorted(ROUND0))))
    assert res.pending and as_dict(res) == {i: y for i, y in ROUND0.items() if i not in (24, 1140)}
    assert "8 of 10 labelled; 2 still pending: indices [24, 1140]" in capsys.readouterr().out


# --------------------------------------------------------------------------- labelling config


def test_hotkeys_are_the_class_numbers_up_to_ten_classes(oracle):
    oracle.write_batch(request())
    root = ET.fromstring((oracle.round_dir(2) / "label_studio_config.xml").read_text())
    choices = [(c.get("value"), c.get("hotkey")) for c in root.iter("Choice")]
    assert choices == [(str(k), str(k)) for k in range(10)]  # pressing 3 labels "3"
    assert next(root.iter("Choices")).get("required") == "true"  # no submit without a choice
    assert hotkeys(3) == ["0", "1", "2"]


def test_hotkeys_for_more_classes_are_unique_letters_then_shift(oracle):
    keys = hotkeys(60)
    assert keys[:10] == [str(k) for k in range(10)]
    assert keys[10:13] == ["q", "w", "e"] and keys[32] == "m"
    assert keys[33] == "shift+q" and keys[55] == "shift+m" and keys[56:] == [None] * 4
    used = [k for k in keys if k]
    assert len(used) == len(set(used)) == 56
    assert not {"r", "u", "h"} & set(used) and len(LETTERS) == 23
    names = [f"c&<{k}>" for k in range(47)]  # EMNIST-balanced size, names that need escaping
    root = ET.fromstring(labelling_config(names))
    got = [(c.get("value"), c.get("hotkey")) for c in root.iter("Choice")]
    assert got == list(zip(names, keys[:47], strict=True))
    with pytest.raises(ValueError, match="n_classes=0"):
        hotkeys(0)


def test_round_readme_and_message_give_the_label_studio_steps(oracle, tmp_path, capsys):
    oracle.label(request())
    d = (tmp_path / "queries" / "round_2").resolve()
    text = (d / "README.txt").read_text()
    assert "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true" in text
    assert "Add Source Storage > Local files" in text and f"\n      {d.parent}\n" in text
    assert "Skip" in text and "latest answer (by\n    updated_at)" in text and "one project for all rounds" in text
    assert "3=3 [key 3]" in text
    tasks = json.loads((d / "label_studio_tasks.json").read_text())
    assert tasks[0]["data"]["round"] == 2 and tasks[0]["data"]["run"] == oracle.run_id
    assert f"This run's id: {oracle.run_id}." in text
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=" + str(d / "images" / "3.png").lstrip("/")
    out = capsys.readouterr().out.replace("\n", " ")
    assert str(d / "README.txt") in out and "section 'Label Studio'" in out


@pytest.mark.usefixtures("store")
def test_real_exports_through_the_loop(tmp_path):
    """The run the fixtures came from (seed 0, 10 initial labels): round 0 imports the real export
    with a skip, a re-label and an edit; round 1 imports a JSON-MIN export of the whole reused
    project (round-0 rows ignored) and the run finishes in the same MLflow run."""
    y = digits().targets
    over = ["oracle=files", "trainer.max_epochs=2", "loop.initial_size=10", "loop.query_size=5",
            "loop.rounds=1", "seed=0"]
    res = Experiment(compose(over, tmp_path), tmp_path / "job").run()
    assert res.status == "pending"
    d0 = res.run_dir / "queries" / "round_0"
    assert sorted(int(r["index"]) for r in read_csv(d0 / "labels.csv")) == sorted(ROUND0)
    run = (res.run_dir / "queries" / "run_id.txt").read_text().strip()
    (d0 / "export.json").write_text(json.dumps(stamped("edge_JSON.json", run)))
    resume = [*over, "loop.resume=true"]
    res2 = Experiment(compose(resume, tmp_path), tmp_path / "job2").run()
    assert res2.status == "pending" and res2.run_id == res.run_id
    state = PoolState.load(res.run_dir)
    assert {int(i): int(state.labels[i]) for i in state.labelled_idx} == {i: v for i, v in ROUND0.items() if i != 24}

    # Round 1 in the same Label Studio project: JSON-MIN of all tasks, one record per annotation.
    d1 = res.run_dir / "queries" / "round_1"
    tasks = json.loads((d1 / "label_studio_tasks.json").read_text())
    new = [{**t["data"], "id": 100 + k, "label": str(y[t["data"]["index"]]), "annotation_id": 200 + k,
            "updated_at": "2026-11-30T10:00:00.000000Z"} for k, t in enumerate(tasks)]
    old = stamped("edge_JSON_MIN.json", run)
    (d1 / "export.json").write_text(json.dumps(old + new))
    res3 = Experiment(compose(resume, tmp_path), tmp_path / "job3").run()
    assert res3.status == "finished" and res3.run_id == res.run_id
    state = PoolState.load(res.run_dir)
    assert state.n_labelled == 14
    np.testing.assert_array_equal(state.labels[state.labelled_idx], y[state.labelled_idx])
    client = MlflowClient(res.tracking_uri)
    received = sorted((m.step, m.value) for m in client.get_metric_history(res.run_id, "labels_received"))
    assert received == [(9, 9.0), (14, 5.0)]
    skipped = sorted((m.step, m.value) for m in client.get_metric_history(res.run_id, "skipped"))
    assert skipped == [(9, 1.0), (14, 0.0)]
    assert client.get_run(res.run_id).info.status == "FINISHED"
