"""The files oracle against untrusted files, through the real ``alframe`` command (in process):
imports that yield no labels, labels from another run, project or image, files saved by a
person's tools (Excel encodings and separators, formulas), and the Label Studio config.

Every refusal is one line per bad row, no traceback, and nothing recorded; the corrected file
then continues the run. Labels stored afterwards are read back from the pool state and
queries.csv. The run is the one the real Label Studio fixtures came from (digits, seed 0, 10
initial labels, then 5), so those exports fit it once stamped with the run's id.
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from alframe.cli import export as export_cli
from alframe.data.digits import digits
from alframe.export import dataset as export
from alframe.oracles.files import CSV_COLUMNS
from alframe.rundir.state import PoolState
from alframe.spreadsheet import from_spreadsheet, spreadsheet_safe

from .helpers import cli_in_process

#: end to end through real runs (a training each): `make test-all`; the file checks below stay fast
SLOW = pytest.mark.slow

LS_DIR = Path(__file__).parent / "data" / "label_studio"  # real Label Studio 1.23.2 exports, see README.md
ROUND0 = {24: 6, 57: 9, 101: 8, 238: 5, 362: 1, 415: 4, 680: 3, 849: 4, 1097: 8, 1140: 8}
COMMON = ["oracle=files", "loop.initial_size=10", "loop.query_size=5", "loop.rounds=1", "trainer.max_epochs=1",
          "seed=0"]
TRUTH = digits().targets


class Run:
    """One run folder driven by the real command: ``start()``, ``resume()``, and what it stored."""

    def __init__(self, tmp_path: Path, store: Path, monkeypatch, capsys, extra=()):
        self.tmp, self.monkeypatch, self.capsys = tmp_path, monkeypatch, capsys
        self.dir = tmp_path / "RUN"
        self.args = [*COMMON, *extra, f"hydra.run.dir={self.dir}", f"mlflow.tracking_uri=sqlite:///{store}",
                     f"paths.output_root={tmp_path / 'elsewhere'}"]

    def cmd(self, *extra: str):
        return cli_in_process(*self.args, *extra, cwd=self.tmp, monkeypatch=self.monkeypatch, capsys=self.capsys)

    def start(self):
        r = self.cmd()
        assert r.returncode == 0 and "Labels needed for round 0" in r.stdout, r.stderr
        return r

    def resume(self):
        r = self.cmd("loop.resume=true")
        assert "Traceback" not in r.stdout + r.stderr
        return r

    @property
    def run_id(self) -> str:
        return (self.dir / "queries" / "run_id.txt").read_text().strip()

    def round(self, r: int) -> Path:
        return self.dir / "queries" / f"round_{r}"

    def labels(self) -> dict[int, int]:
        """The labels in the pool state, checked against queries.csv."""
        state = PoolState.load(self.dir)
        got = {int(i): int(state.labels[i]) for i in state.labelled_idx}
        with (self.dir / "queries.csv").open(newline="") as f:
            assert {int(q["index"]): int(q["label"]) for q in csv.DictReader(f)} == got
        return got

    def pending(self) -> list[int] | None:
        p = PoolState.load(self.dir).progress.pending
        return None if p is None else sorted(p.idx)

    def tasks(self, r: int) -> list[dict]:
        return json.loads((self.round(r) / "label_studio_tasks.json").read_text())

    def rows(self, r: int = 0) -> list[dict]:
        with (self.round(r) / "labels.csv").open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def write_rows(self, rows: list[dict], r: int = 0, fields=None, **fmt) -> Path:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(fields or rows[0]), lineterminator="\r\n", **fmt)
        w.writeheader()
        w.writerows(rows)
        path = self.round(r) / "labels.csv"
        path.write_text(buf.getvalue(), encoding="utf-8", newline="")
        return path

    def export(self, records, r: int = 0) -> None:
        (self.round(r) / "export.json").write_text(json.dumps(records))

    def refused(self, *lines: str, before: dict | None = None) -> str:
        """Resume; assert exit 2, one 'nothing was imported' message holding each of ``lines``
        (each on its own line), and no label recorded. Returns stderr."""
        before = self.labels() if before is None else before
        pending = self.pending()
        r = self.resume()
        assert r.returncode == 2, r.stdout[-2000:] + r.stderr
        err = r.stderr
        assert "nothing was imported" in err or err.count("\n") == 1, err
        for line in lines:
            assert any(line in x for x in err.splitlines()), f"{line!r} not in:\n{err}"
        assert self.labels() == before and self.pending() == pending
        return err


def stamped(name: str, run: str) -> list[dict]:
    """A real export with ``run`` as each task's ``data.run`` (JSON) or record ``run`` (JSON-MIN),
    as Label Studio exports the tasks alframe writes now."""
    records = json.loads((LS_DIR / name).read_text())
    for rec in records:
        (rec["data"] if "data" in rec else rec)["run"] = run
    return records


@pytest.fixture
def run(tmp_path, store, monkeypatch, capsys):
    return Run(tmp_path, store, monkeypatch, capsys)


def cancelled(records: list[dict], *indices: int) -> list[dict]:
    """JSON export ``records`` with the tasks of ``indices`` skipped (Label Studio's Skip button)."""
    out = json.loads(json.dumps(records))
    for t in out:
        if t["data"]["index"] in indices:
            t["annotations"] = [{"id": 900, "result": [], "was_cancelled": True,
                                 "updated_at": "2026-12-01T10:00:00.000000Z"}]
    return out


def fill(rows: list[dict], labels: dict) -> list[dict]:
    """``rows`` with ``label`` set from ``labels`` (index -> text), the rest left as they are."""
    return [dict(r, label=labels.get(int(r["index"]), r["label"])) for r in rows]


def round1_continues(run: Run, r) -> None:
    """The round-0 labels are ROUND0 exactly and the run handed off round 1."""
    assert r.returncode == 0, r.stderr
    assert run.labels() == ROUND0 and "Labels needed for round 1" in r.stdout
    assert len(run.pending()) == 5 and not set(run.pending()) & set(ROUND0)


# --------------------------------------------------------------------------- 1. imports that yield no labels
@SLOW
def test_imports_without_labels_leave_the_round_pending_then_a_correct_export_continues(run):
    """[] (JSON-MIN of nothing), every task skipped (JSON), every row 'skip' (labels.csv), every
    task still without annotation (JSON): the round stays pending, the state unchanged."""
    run.start()
    good = stamped("p1_export_JSON.json", run.run_id)
    for records, line in [([], "Nothing imported from"),
                          ([dict(t, annotations=[]) for t in good], "Nothing imported from")]:
        run.export(records)
        r = run.resume()
        assert r.returncode == 0 and line in r.stdout and "0 of 10 labelled; 10 still pending" in r.stdout, r.stderr
        assert run.labels() == {} and run.pending() == sorted(ROUND0)

    run.export(cancelled(good, *ROUND0))
    r = run.resume()
    assert r.returncode == 0, r.stderr
    assert ("all 10 samples of round 0 are skipped, and a round needs at least one label; the round stays pending"
            in r.stdout.replace("\n", " "))
    assert run.labels() == {} and run.pending() == sorted(ROUND0)

    (run.round(0) / "export.json").unlink()
    run.write_rows(fill(run.rows(), {i: "skip" for i in ROUND0}))
    r = run.resume()
    assert r.returncode == 0 and "all 10 samples of round 0 are skipped" in r.stdout, r.stderr
    assert run.labels() == {} and run.pending() == sorted(ROUND0)

    run.export(good)  # the same place, now a correct export: read, and the run goes on
    round1_continues(run, run.resume())


@SLOW
def test_partial_exports_import_what_is_answered_and_ask_for_the_rest(run):
    """JSON-MIN taken while the annotator works (3 tasks not labelled yet, one re-labelled), then
    labels.csv half filled with a skip: each import adds what is answered; skips count only once
    every sample is answered."""
    run.start()
    rid = run.run_id
    early = [rec for rec in stamped("edge_JSON_MIN.json", rid) if rec["index"] not in (849, 1097)]
    run.export(early)  # 24 (skipped: left out by JSON-MIN), 849 and 1097 not labelled yet
    r = run.resume()
    assert r.returncode == 0, r.stderr
    assert "Imported 7 labels" in r.stdout and "7 of 10 labelled; 3 still pending: indices [24, 849, 1097]" in r.stdout
    assert "export JSON to have the skips counted" in r.stdout
    seven = {i: y for i, y in ROUND0.items() if i not in (24, 849, 1097)}
    assert run.labels() == seven and run.pending() == [24, 849, 1097]

    # the person goes on in the spreadsheet: 849 labelled, 24 skipped, 1097 still empty
    (run.round(0) / "export.json").unlink()
    run.write_rows(fill(run.rows(), {**{i: str(y) for i, y in seven.items()}, 849: "4", 24: "skip"}))
    r = run.resume()
    assert r.returncode == 0 and "8 of 10 labelled, 1 skipped; 1 still pending: indices [1097]" in r.stdout, r.stderr
    assert run.labels() == {**seven, 849: 4} and run.pending() == [24, 1097]

    run.write_rows(fill(run.rows(), {1097: "8"}))
    r = run.resume()
    assert r.returncode == 0 and "1 skipped, back to the pool: indices [24]" in r.stdout, r.stderr
    assert run.labels() == {i: y for i, y in ROUND0.items() if i != 24}
    assert "Labels needed for round 1" in r.stdout and 24 not in run.pending()


@SLOW
def test_a_submitted_annotation_without_a_choice_is_named(run):
    run.start()
    good = stamped("p1_export_JSON.json", run.run_id)
    bad = json.loads(json.dumps(good))
    bad[0]["annotations"][0]["result"] = []  # submitted, not cancelled: not a skip, not "no annotation yet"
    run.export(bad)
    err = run.refused("task 1 (id 1) (index 24): has a submitted annotation with no choice (not a skip): open the "
                      "task in Label Studio, choose a class or press Skip")
    assert "1 problem(s)" in err and "no annotation yet" not in err
    mini = stamped("p1_export_JSON_MIN.json", run.run_id)
    del mini[0]["label"]  # JSON-MIN: an annotation record (annotation_id) without a label
    run.export(mini)
    run.refused(f"task 1 (id {mini[0]['id']}) (index 24): has a submitted annotation with no choice")
    run.export(good)
    round1_continues(run, run.resume())


# --------------------------------------------------------------------------- 2. labels from somewhere else
@SLOW
def test_exports_of_another_run_project_or_image_are_refused(tmp_path, store, monkeypatch, capsys):
    run = Run(tmp_path, store, monkeypatch, capsys)
    other = Run(tmp_path / "elsewhere2", store, monkeypatch, capsys)  # same config: same indices
    (tmp_path / "elsewhere2").mkdir()
    run.start()
    other.start()
    assert other.run_id != run.run_id and [t["data"]["index"] for t in other.tasks(0)] == sorted(ROUND0)
    foreign = stamped("p1_export_JSON.json", other.run_id)  # made from the other run's tasks
    run.export(foreign)
    err = run.refused(f"task 1 (id 1) (index 24): has run {other.run_id!r}, not this run's {run.run_id!r}: it comes "
                      "from another run folder or Label Studio project")
    assert "10 problem(s)" in err and err.count("not this run's") == 10
    run.export(stamped("p1_export_JSON_MIN.json", other.run_id))
    assert run.refused().count("not this run's") == 10
    run.export(json.loads((LS_DIR / "p1_export_JSON.json").read_text()))  # tasks written without a run id
    assert run.refused("(index 24): has no run id").count("has no run id") == 10

    good = stamped("p1_export_JSON.json", run.run_id)
    moved = json.loads(json.dumps(good))
    moved[0]["data"]["file"] = "../../other/24.png"
    moved[1]["data"]["image"] = moved[1]["data"]["image"].replace("round_0", "round_1")
    moved[2]["data"]["image"] = moved[2]["data"]["image"].replace("101.png", "238.png")
    moved[3]["data"]["round"] = 1
    moved[4]["data"]["index"] = 1300  # a task of an index this round never asked for
    run.export(moved)
    err = run.refused("task 1 (id 1) (index 24): has file '../../other/24.png', not 'images/24.png'",
                      "task 2 (id 2) (index 57): has image '/data/local-files/?d=run/queries/round_1/images/57.png' "
                      "of round 1, after this round 0",
                      "task 3 (id 3) (index 101): has image",
                      "task 4 (id 4) (index 238): has round 1, but its image is of round 0",
                      "task 5 (id 5) (index 1300): has file 'images/362.png', not 'images/1300.png'")
    assert "5 problem(s)" in err
    run.export(good)
    round1_continues(run, run.resume())


@SLOW
def test_csv_rows_of_another_run_or_image_and_duplicate_columns_are_refused(run):
    run.start()
    rows = fill(run.rows(), {i: str(y) for i, y in ROUND0.items()})
    bad = [dict(r) for r in rows]
    bad[0]["file"] = "../../other/24.png"  # same stem, another folder
    bad[1]["file"] = "images/57.PNG"
    bad[2]["run"] = "someotherrun"
    run.write_rows(bad)
    err = run.refused("line 2 (index 24): has file '../../other/24.png', not 'images/24.png'",
                      "line 3 (index 57): has file 'images/57.PNG', not 'images/57.png'",
                      "line 4 (index 101): has run 'someotherrun', not this run's")
    assert "3 problem(s)" in err

    text = (run.round(0) / "labels.csv").read_text()
    header = ",".join(CSV_COLUMNS)
    run.write_rows([{**r, "label2": "0"} for r in rows], fields=[*CSV_COLUMNS, "label2"])
    dup = (run.round(0) / "labels.csv").read_text().replace("label2", "label", 1)
    (run.round(0) / "labels.csv").write_text(dup)
    run.refused("duplicate column(s) 'label' in columns 5, 7: keep one column of each name")
    assert header in text

    run.write_rows([{k: v for k, v in r.items() if k != "run"} for r in rows])
    run.refused("missing column(s) ['run']")

    run.write_rows(rows)
    round1_continues(run, run.resume())


@SLOW
def test_several_choices_in_one_annotation_are_refused(run):
    run.start()
    good = stamped("p1_export_JSON.json", run.run_id)
    two = json.loads(json.dumps(good))
    two[0]["annotations"][0]["result"][0]["value"]["choices"] = ["6", "5"]
    run.export(two)
    run.refused("task 1 (id 1) (index 24): has an annotation with 2 choices ['6', '5']: one class per task")
    two[0]["annotations"][0]["result"] = two[0]["annotations"][0]["result"] * 2  # two results of one choice each
    two[0]["annotations"][0]["result"][0] = good[0]["annotations"][0]["result"][0]
    run.export(two)
    run.refused("(index 24): has an annotation with 3 choices")
    mini = stamped("p1_export_JSON_MIN.json", run.run_id)
    mini[1]["label"] = {"choices": ["9", "1"]}
    run.export(mini)
    run.refused("(index 57): has an annotation with 2 choices ['9', '1']")
    run.export(good)
    round1_continues(run, run.resume())


# --------------------------------------------------------------------------- 3. files a person's tools write
@SLOW
def test_encodings_other_than_utf8_are_named(run):
    run.start()
    rows = fill(run.rows(), {i: str(y) for i, y in ROUND0.items()})
    noted = [dict(r, note="vérifié") for r in rows]
    path = run.write_rows(noted)
    raw = path.read_text(encoding="utf-8").encode("cp1252")  # what Excel's plain 'CSV' writes
    path.write_bytes(raw)
    at = raw.index(b"\xe9")
    err = run.refused(f"is not UTF-8 (byte 0xe9 at offset {at}; it looks like Windows-1252")
    assert err.strip().endswith("save it as 'CSV UTF-8'") and err.count("\n") == 1
    path.write_bytes(path.read_bytes().decode("cp1252").replace(",", "\t").encode("utf-16"))  # 'Unicode Text'
    run.refused("is UTF-16 text (e.g. Excel's 'Unicode Text'), not UTF-8: save it as 'CSV UTF-8")
    path.write_bytes(b"PK\x03\x04" + bytes(200))  # a workbook saved under the .csv name
    run.refused("is a spreadsheet workbook (.xlsx), not CSV text")
    path.write_bytes(b"\xef\xbb\xbf" + raw.decode("cp1252").encode("utf-8"))  # 'CSV UTF-8' (with its BOM)
    round1_continues(run, run.resume())


@SLOW
def test_other_separators_are_named(run):
    run.start()
    rows = fill(run.rows(), {i: str(y) for i, y in ROUND0.items()})
    path = run.write_rows(rows, delimiter=";")
    err = run.refused("uses ';' as separator, not commas: save it comma-separated")
    assert err.count("\n") == 1 and "missing column" not in err
    run.write_rows(rows, delimiter="\t")
    run.refused("uses tabs as separator")
    path.write_text("sep=;\n" + path.read_text().replace("\t", ";"))
    run.refused("uses ';' as separator (its first line is 'sep=;')")
    run.write_rows(rows)
    round1_continues(run, run.resume())


@SLOW
def test_cells_a_spreadsheet_would_run_are_escaped_and_read_back(tmp_path, store, monkeypatch, capsys):
    """Class and file names starting with = + - @: the files oracle's labels.csv and alframe-export
    write them with a leading quote; a person's answer is read back escaped or raw."""
    from PIL import Image
    from sklearn.datasets import load_digits

    b = load_digits()
    photos = tmp_path / "photos"
    photos.mkdir()
    names = ["=1+1.png", "+2.png", "-3.png", "@4.png", *[f"p{k}.png" for k in range(12)]]
    for k, name in enumerate(names):
        Image.fromarray(np.round(b.images[k] / 16 * 255).astype(np.uint8)).save(photos / name)
    classes = ["=SUM(1+1)", "@cmd", "-x", "+y"]
    run = Run(tmp_path, store, monkeypatch, capsys, extra=[
        "dataset=unlabelled_folder", f"dataset.root={photos}", "dataset.classes=['=SUM(1+1)','@cmd','-x','+y']",
        "dataset.image_size=8", "dataset.channels=1", "loop.initial_size=4", "loop.query_size=2"])
    run.start()
    rows = run.rows()
    asked = [int(r["index"]) for r in rows]
    answers = ["'=SUM(1+1)", "@cmd", "'-x", "+y"]  # escaped as the file shows them, or typed raw
    run.write_rows([dict(r, label=a) for r, a in zip(rows, answers, strict=True)])
    r = run.resume()
    assert r.returncode == 0 and "Labels needed for round 1" in r.stdout, r.stderr
    assert run.labels() == {i: k for k, i in enumerate(asked)}
    with (run.dir / "queries.csv").open() as f:
        assert [from_spreadsheet(q["class_name"]) for q in csv.DictReader(f)] == classes  # escaped, read back
    text = (run.round(1) / "labels.csv").read_text()
    sugg = [r["suggested_label"] for r in run.rows(1)]
    assert len(sugg) == 2 and all(s.startswith("'") and from_spreadsheet(s) in classes for s in sugg), text

    assert export_cli.main([str(run.dir), "--format", "csv", "--out", str(tmp_path / "out")]) == 0
    with (tmp_path / "out" / "labels.csv").open(newline="", encoding="utf-8") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert {"'=1+1.png", "'+2.png", "'-3.png", "'@4.png"} <= set(cells)
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert {from_spreadsheet(c) for c in cells} >= set(classes) | set(names[:4])


def test_spreadsheet_escaping_round_trips(tmp_path):
    for text in ["=1+1", "+y", "-3", "@x", "\tx", "\rx", "'=x", "''", "'", "'a", "a=b", "", "cat", "0.9100"]:
        cell = spreadsheet_safe(text)
        assert from_spreadsheet(cell) == text and not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert spreadsheet_safe("=1+1") == "'=1+1" and spreadsheet_safe("cat") == "cat" and spreadsheet_safe(None) == ""
    rows = [export.Entry(0, "\tfile.png", 0, "human", None, 0), export.Entry(1, "\rb.png", 1, "machine", 0.5, None)]
    path = export.write_csv(rows, ["=cmd|' /C calc'!A0", "@SUM(1)"], tmp_path)
    with path.open(newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    assert got[1][:2] == ["'\tfile.png", "'=cmd|' /C calc'!A0"] and got[2][:2] == ["'\rb.png", "'@SUM(1)"]


# --------------------------------------------------------------------------- 4. the Label Studio config
@SLOW
def test_label_studio_config_requires_a_choice_and_sets_a_hotkey_per_class(run):
    run.start()
    root = ET.fromstring((run.round(0) / "label_studio_config.xml").read_text())
    choices = next(root.iter("Choices"))
    assert choices.get("required") == "true" and choices.get("choice") == "single"
    assert [(c.get("value"), c.get("hotkey")) for c in root.iter("Choice")] == [(str(k), str(k)) for k in range(10)]
    tasks = run.tasks(0)
    assert all(t["data"]["run"] == run.run_id and t["data"]["file"] == f"images/{t['data']['index']}.png"
               for t in tasks)
    assert {r["run"] for r in run.rows()} == {run.run_id} and run.run_id.isalpha() and len(run.run_id) == 12


# --------------------------------------------------------------------------- malformed files, one line each
@pytest.fixture
def oracle(tmp_path):
    from alframe.oracles import FilesOracle, LabelRequest

    o = FilesOracle()
    o.setup(digits(), tmp_path)
    o.request = LabelRequest(round=0, idx=np.array(sorted(ROUND0)))
    o.label(o.request)  # the hand-off
    return o


def import_once(oracle, name: str, content: bytes):
    """``oracle.label`` after writing ``content`` as ``name`` in round 0's folder; the
    LabelImportError's problem lines, or the result."""
    from alframe.oracles import LabelImportError

    (oracle.round_dir(0) / name).write_bytes(content)
    try:
        return oracle.label(oracle.request)
    except LabelImportError as e:
        text = str(e)
        assert "Traceback" not in text
        return text.splitlines()[1:] or [text]


@pytest.mark.parametrize("mutate,line", [
    (lambda t: b"{nope", "not a readable JSON file (Expecting property name"),
    (lambda t: b"[" * 100000 + b"]" * 100000, "not a readable JSON file (maximum recursion depth"),
    (lambda t: json.dumps({"tasks": t}).encode(), "a Label Studio export is a JSON list of tasks, got dict"),
    (lambda t: b"[1]", "task 1: is int, not a task object"),
    (lambda t: json.dumps([{**t[0], "annotations": "x"}]).encode(), "(index 24): has annotations that are not a list"),
    (lambda t: json.dumps([{**t[0], "annotations": [{**t[0]["annotations"][0], "was_cancelled": "false"}]}]).encode(),
     "(index 24): has was_cancelled='false': must be true or false"),
    (lambda t: json.dumps([{**t[0], "annotations": [{"result": {"a": 1}}]}]).encode(),
     "(index 24): has an annotation whose result is dict, not a list"),
    (lambda t: json.dumps([{**t[0], "annotations": [{"result": [{"value": {"choices": "6"}}]}]}]).encode(),
     "(index 24): has choices '6' that are not a list"),
    (lambda t: json.dumps([{**t[0], "annotations": [{"result": [{"value": {"choices": [True]}}]}]}]).encode(),
     "(index 24): has a choice True that is not a class name"),
    (lambda t: json.dumps([{**t[0], "data": {**t[0]["data"], "index": 24.0}}]).encode(),
     "task 1 (id 1): index 24.0 is not an integer"),
    (lambda t: json.dumps([{**t[0], "data": {**t[0]["data"], "index": -3}}]).encode(),
     "task 1 (id 1): index -3 is not a pool index (0..1346)"),
    (lambda t: json.dumps([{**t[0], "data": {**t[0]["data"], "round": "0"}}]).encode(),
     "(index 24): has round '0', not a round number"),
])
def test_malformed_label_studio_exports_are_refused_in_one_line(oracle, mutate, line):
    tasks = stamped("p1_export_JSON.json", oracle.run_id)
    got = import_once(oracle, "export.json", mutate(tasks))
    assert isinstance(got, list) and any(line in x for x in got), got
    assert not (oracle.run_dir / "pool_state.npz").exists()


@pytest.mark.parametrize("edit,line", [
    (lambda t: t.replace("images/24.png", "images/2\x004.png"), "holds a NUL byte (offset"),
    (lambda t: t.replace(",6,", "," + "6" * 200_000 + ",", 1), "line 2 is not readable CSV (field larger than"),
    (lambda t: t.replace(",6,", ",6,7,", 1), "line 2 has 7 values but the header has 6 columns"),
    (lambda t: t.splitlines()[0] + "\n", "missing rows for indices [24, 57, 101"),
    (lambda t: "", "is empty: it needs the header index,file,suggested_label,confidence,label,run"),
    (lambda t: t.replace(",label,", ",Label,", 1), "missing column(s) ['label']"),
    (lambda t: t.replace("\n24,", "\n24.0,", 1), "line 2: index '24.0' is not an integer"),
    (lambda t: t.replace(",6,", ",=1+1,", 1), "line 2 (index 24): unknown class '=1+1'"),
    (lambda t: t.replace("images/24.png", "./images/24.png"), "has file './images/24.png', not 'images/24.png'"),
])
def test_malformed_csv_files_are_refused_in_one_line(oracle, edit, line):
    rows = list(csv.DictReader(io.StringIO((oracle.round_dir(0) / "labels.csv").read_text())))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(fill(rows, {i: str(y) for i, y in ROUND0.items()}))
    got = import_once(oracle, "labels.csv", edit(buf.getvalue()).encode())
    assert isinstance(got, list) and any(line in x for x in got), got
    assert not (oracle.run_dir / "pool_state.npz").exists()


def test_csv_cells_may_come_back_escaped_or_trimmed(oracle):
    rows = list(csv.DictReader(io.StringIO((oracle.round_dir(0) / "labels.csv").read_text())))
    answers = {24: " 6 ", 57: "'-", 101: "Skip", 238: "'=5"}  # '=5: not a class even unescaped
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*rows[0], "notes"], lineterminator="\r\n")
    w.writeheader()
    w.writerows(dict(r, label=answers.get(int(r["index"]), str(ROUND0[int(r["index"])])), notes="ok")
                for r in rows)
    got = import_once(oracle, "labels.csv", b"\xef\xbb\xbf" + buf.getvalue().encode() + b"\r\n,,,,,,\r\n")
    assert got == ["  line 5 (index 238): unknown class \"'=5\"", "allowed classes: 0=0, 1=1, 2=2, 3=3, 4=4, 5=5, 6=6, 7=7, 8=8, 9=9"], got
    answers[238] = "5"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(dict(r, label=answers.get(int(r["index"]), str(ROUND0[int(r["index"])]))) for r in rows)
    res = import_once(oracle, "labels.csv", buf.getvalue().encode())
    assert dict(zip(res.idx.tolist(), res.labels.tolist(), strict=True)) == {
        i: y for i, y in ROUND0.items() if i not in (57, 101)}
    assert res.info["skipped"] == 2.0 and not res.pending
