"""The live Label Studio oracle's logic against an in-memory Label Studio (no network): the batch
as tasks (suggestion, score, round), polling only what changed, skips, several annotators, a
label corrected after its round, a server that goes away, the wait limit, Ctrl-C and resume with
no task imported twice, and the checks done once at start. The real server: test_label_studio_live.py."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from alframe.data.digits import digits
from alframe.oracles.base import LabelRequest, LabelResult
from alframe.oracles.label_studio_live import LabelStudioOracle, classes_of, config
from alframe.oracles.ls_client import LabelStudioError
from alframe.oracles.ls_rounds import STATE_NAME
from alframe.oracles.session import OracleSession
from alframe.rundir.state import PoolState

from .fake_label_studio import FakeLabelStudio

IDX = np.array([3, 8, 15, 42])


@pytest.fixture(scope="module")
def data():
    return digits()


def make(data, run_dir, server=None, **kw) -> LabelStudioOracle:
    oracle = LabelStudioOracle(poll_s=0.1, **kw)
    oracle.client = server if server is not None else FakeLabelStudio()
    oracle.setup(data, run_dir)
    return oracle


def request(round=1, idx=IDX, labelled=None, scores=(0.9, 0.8, 0.7, 0.6)) -> LabelRequest:
    return LabelRequest(round=round, idx=np.asarray(idx), predicted=np.array([1, 2, 3, 4])[: len(idx)],
                        confidence=np.array([0.5, 0.6, 0.7, 0.8])[: len(idx)], labelled=labelled,
                        scores=None if scores is None else np.asarray(scores)[: len(idx)])


def in_thread(oracle: LabelStudioOracle, req: LabelRequest):
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", oracle.label(req)), daemon=True)
    t.start()
    return t, out


def wait_tasks(server: FakeLabelStudio, round: int, n: int, timeout=10.0):
    t0 = time.monotonic()
    while len(server.round_tasks(round)) < n:
        assert time.monotonic() - t0 < timeout, "the batch never appeared"
        time.sleep(0.01)
    return {t.data["index"]: t for t in server.round_tasks(round)}


def answer_all(server, round, truth, n, skip=(), **kw):
    tasks = wait_tasks(server, round, n)
    for i, t in tasks.items():
        server.annotate(t.id, None if i in skip else str(truth[i]), **kw)
    return tasks


def test_a_batch_as_tasks_answered_in_label_studio(data, tmp_path):
    server = FakeLabelStudio()
    oracle = make(data, tmp_path, server)
    assert server.projects[1]["title"] == "alframe" and classes_of(server.projects[1]["label_config"]) == \
        data.class_names and 'required="true"' in server.projects[1]["label_config"]
    assert server.storages[1] == [str((tmp_path / "queries").resolve())] and server.views == ["alframe: to label"]
    t, out = in_thread(oracle, request())
    tasks = wait_tasks(server, 1, 4)
    first = tasks[3]
    assert first.data["score"] == 0.9 and first.data["rank"] == 1 and first.data["round"] == 1
    assert first.data["image"].startswith("/data/local-files/?d=") and first.data["suggested_label"] == "1"
    pred = server.predictions[first.id][0]
    assert pred["model_version"] == "alframe" and pred["score"] == 0.5
    assert pred["result"][0]["value"]["choices"] == ["1"]
    time.sleep(0.35)  # a few polls with nothing new
    y = data.targets
    answer_all(server, 1, y, 4, skip={42}, seconds=3.5)
    t.join(10)
    res: LabelResult = out["r"]
    assert not res.pending and dict(zip(res.idx.tolist(), res.labels.tolist(), strict=True)) == \
        {i: int(y[i]) for i in (3, 8, 15)}
    assert res.seconds.tolist() == [3.5] * 3 and res.info["skipped"] == 1 and res.info["labels_corrected"] == 0
    polls = [c for c in server.calls if c.startswith("tasks")]
    # one look-up before the import, one read of everything of the run, then only what changed
    assert polls[:2] == ["tasks(round)", "tasks"] and polls[2:] and all(c == "tasks(since)" for c in polls[2:])
    saved = json.loads((tmp_path / STATE_NAME).read_text())
    assert saved["project"] == 1 and set(saved["rounds"]["1"]["tasks"]) == {"3", "8", "15", "42"}
    assert saved["rounds"]["1"]["used"]["42"] == "skip" and "key" not in json.dumps(saved).lower()


def test_several_annotators_latest_counts_and_disagreements_are_counted(data, tmp_path):
    server = FakeLabelStudio()
    oracle = make(data, tmp_path, server)
    t, out = in_thread(oracle, request(idx=IDX[:2]))
    tasks = wait_tasks(server, 1, 2)
    server.annotate(tasks[3].id, "5", annotator=1)
    server.annotate(tasks[3].id, "6", annotator=2)  # the latest: counts
    server.annotate(tasks[8].id, "7", annotator=1)
    server.annotate(tasks[8].id, "7", annotator=2)
    t.join(10)
    res = out["r"]
    assert dict(zip(res.idx.tolist(), res.labels.tolist(), strict=True)) == {3: 6, 8: 7}
    assert res.info["annotator_disagreements"] == 1 and res.info["annotators"] == 2


def test_an_answer_outside_the_classes_is_reported_and_waits(data, tmp_path, capsys):
    server = FakeLabelStudio()
    oracle = make(data, tmp_path, server)
    t, out = in_thread(oracle, request(idx=IDX[:1]))
    tasks = wait_tasks(server, 1, 1)
    server.annotate(tasks[3].id, "cat")  # a project whose config someone edited
    time.sleep(0.5)
    assert t.is_alive() and "has the answer 'cat', not one of this run's classes" in capsys.readouterr().out
    server.annotate(tasks[3].id, "3")
    t.join(10)
    assert out["r"].labels.tolist() == [3]


def test_a_first_batch_of_skips_is_imported_again(data, tmp_path, capsys):
    server = FakeLabelStudio()
    oracle = make(data, tmp_path, server)
    req = request(round=0, idx=IDX[:2], labelled=np.full(len(data.train), -1), scores=None)
    t, out = in_thread(oracle, req)
    for task in wait_tasks(server, 0, 2).values():
        server.annotate(task.id, None)  # both skipped: nothing to train on
    time.sleep(0.5)
    assert t.is_alive() and "every sample was skipped" in capsys.readouterr().out
    again = wait_tasks(server, 0, 2)
    assert server.imports == [2, 2] and len(server.round_tasks(0)) == 2  # the old tasks were removed
    for i, task in again.items():
        server.annotate(task.id, str(data.targets[i]))
    t.join(10)
    assert sorted(out["r"].idx.tolist()) == sorted(IDX[:2].tolist())


def test_a_label_changed_after_its_round_is_a_correction(data, tmp_path):
    server = FakeLabelStudio()
    oracle = make(data, tmp_path, server)
    state = PoolState.create(len(data.train))
    session = OracleSession(oracle, data, state, lambda: state.save(tmp_path))
    t = threading.Thread(target=lambda: session.ask(1, IDX[:2], None), daemon=True)
    t.start()
    tasks = wait_tasks(server, 1, 2)
    ann = server.annotate(tasks[3].id, "5")
    server.annotate(tasks[8].id, None)  # skipped: back in the pool
    t.join(10)
    assert state.labels[3] == 5 and state.labelled_round[3] == 1 and state.labelled_round[8] == -1
    server.edit(ann, "9")  # changed in Label Studio after round 1 was used
    server.annotate(tasks[8].id, "4")  # a skipped task labelled later: not a label of this run
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("m", session.ask(2, np.array([20]), None)), daemon=True)
    t.start()
    answer_all(server, 2, data.targets, 1)
    t.join(10)
    done, metrics = out["m"]
    assert done and metrics["labels_corrected"] == 1
    assert state.labels[3] == 9 and state.labelled_round[3] == 1 and state.n_labelled == 2
    assert state.progress.corrections == [{"index": 3, "old": 5, "new": 9, "round": 2}]
    assert state.labelled_round[8] == -1  # still in the pool


def test_resume_finds_the_same_tasks_and_the_answers_given_meanwhile(data, tmp_path):
    server = FakeLabelStudio()
    oracle = make(data, tmp_path, server)
    oracle.sleep = lambda s: (_ for _ in ()).throw(KeyboardInterrupt)  # Ctrl-C while waiting
    tasks = {}
    res = oracle.label(request())
    assert res.pending and len(res.idx) == 0 and server.imports == [4]
    for t in server.round_tasks(1):
        tasks[t.data["index"]] = t
    server.annotate(tasks[3].id, "3")  # answered while alframe was stopped
    again = make(data, tmp_path, server)  # loop.resume=true: a new process, the same run folder
    t, out = in_thread(again, request())
    time.sleep(0.2)
    for i in (8, 15, 42):
        server.annotate(tasks[i].id, "1")
    t.join(10)
    assert server.imports == [4] and len(server.round_tasks(1)) == 4  # nothing imported twice
    assert sorted(out["r"].idx.tolist()) == [3, 8, 15, 42]


def test_an_import_whose_reply_was_lost_is_not_repeated(data, tmp_path):
    server = FakeLabelStudio()
    oracle = make(data, tmp_path, server)
    oracle.sleep = lambda s: (_ for _ in ()).throw(KeyboardInterrupt)
    oracle.label(request())
    saved = json.loads((tmp_path / STATE_NAME).read_text())
    del saved["rounds"]["1"]  # as if alframe died between the import and saving the task ids
    (tmp_path / STATE_NAME).write_text(json.dumps(saved))
    again = make(data, tmp_path, server)
    again.sleep = oracle.sleep
    again.label(request())
    assert server.imports == [4] and len(server.round_tasks(1)) == 4


def test_a_server_that_goes_away_is_retried_with_backoff(data, tmp_path, capsys):
    server = FakeLabelStudio()
    oracle = make(data, tmp_path, server)
    waits = []
    oracle.sleep = lambda s: (waits.append(s), time.sleep(0.01))
    t, out = in_thread(oracle, request(idx=IDX[:1]))
    tasks = wait_tasks(server, 1, 1)
    server.down = 4
    server.annotate(tasks[3].id, "2")
    t.join(10)
    assert out["r"].labels.tolist() == [2]
    assert [w for w in waits if w != oracle.poll_s][:4] == [1.0, 2.0, 4.0, 8.0]
    text = capsys.readouterr().out
    assert text.count("is not answering") == 1 and "answers again" in text


def test_the_wait_limit_goes_on_with_the_answers_given(data, tmp_path):
    server = FakeLabelStudio()
    oracle = make(data, tmp_path, server, wait_limit_s=0.3)
    t, out = in_thread(oracle, request())
    tasks = wait_tasks(server, 1, 4)
    server.annotate(tasks[8].id, "8")
    t.join(10)
    res = out["r"]
    assert not res.pending and res.idx.tolist() == [8] and res.info["returned_unanswered"] == 3
    assert [t.data["index"] for t in server.round_tasks(1)] == [8]  # unanswered tasks removed


def test_images_are_uploaded_when_the_server_does_not_serve_local_files(data, tmp_path, capsys):
    server = FakeLabelStudio(serve_local_files=False)
    oracle = make(data, tmp_path, server)
    assert "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true" in capsys.readouterr().out
    oracle.sleep = lambda s: (_ for _ in ()).throw(KeyboardInterrupt)
    oracle.label(request())
    assert len(server.uploads) == 4
    assert all(t.data["image"].startswith("/data/upload/") for t in server.round_tasks(1))
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true"):
        make(data, tmp_path / "b", FakeLabelStudio(serve_local_files=False), images="local_files")


def test_a_project_with_other_classes_is_refused(data, tmp_path):
    server = FakeLabelStudio()
    server.create_project("alframe", config(["cat", "dog"]), "x")
    with pytest.raises(LabelStudioError, match="has the classes \\['cat', 'dog'\\]"):
        make(data, tmp_path, server)


def test_bad_settings_and_a_missing_key_are_named(data, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="without credentials"):
        LabelStudioOracle(url="http://me:secret@localhost:8080")
    with pytest.raises(ValueError, match="oracle.images"):
        LabelStudioOracle(images="ftp")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(LabelStudioError, match="set the environment variable LABEL_STUDIO_API_KEY"):
        LabelStudioOracle().setup(data, tmp_path)


def test_the_key_is_in_no_message(data, tmp_path, monkeypatch, capsys):
    pytest.importorskip("label_studio_sdk")
    secret = "a1b2c3d4e5f6secretkey"
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", secret)
    oracle = LabelStudioOracle(url="http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ConnectionError) as e:
        oracle.setup(data, tmp_path)
    assert "cannot reach Label Studio at http://127.0.0.1:9" in str(e.value) and secret not in str(e.value)
    assert secret not in capsys.readouterr().out
    assert not any(secret in p.read_text() for p in tmp_path.rglob("*.json"))


def test_pool_state_correct_keeps_the_budget_and_records_each_change():
    state = PoolState.create(10)
    state.label(np.array([1, 2]), np.array([3, 4]), 0)
    with pytest.raises(ValueError, match="not labelled"):
        state.correct(np.array([5]), np.array([1]), 1)
    with pytest.raises(ValueError, match="must lie in"):
        state.correct(np.array([1]), np.array([12]), 1, num_classes=10)
    assert state.correct(np.array([1, 2]), np.array([7, 4]), 1) == 1
    assert state.labels[1] == 7 and state.labelled_round[1] == 0 and state.n_labelled == 2
    assert state.progress.corrections == [{"index": 1, "old": 3, "new": 7, "round": 1}]
