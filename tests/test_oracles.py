"""Oracles on real digits: noisy annotator rates, the terminal oracle driven by scripted input,
persisted answers, label-time logging, and CEAL pseudo-labelling through the loop."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from mlflow import MlflowClient

from alframe.data.digits import digits
from alframe.loop.experiment import Experiment
from alframe.loop.selection import initial_indices
from alframe.oracles import LabelRequest, LabelResult, NoisyOracle, StoredOracle, TerminalOracle, parse_label
from alframe.oracles.answers import SKIP, AnswerStore
from alframe.oracles.render import RAMP, HalfBlockImage, terminal_preview
from alframe.rundir.state import PoolState

from .conftest import compose

TINY = ["trainer.max_epochs=2", "loop.initial_size=6", "loop.query_size=4", "loop.rounds=1"]


@pytest.fixture(scope="module")
def data():
    return digits()


def metric(res_or_uri, run_id: str, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(res_or_uri)
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


# --------------------------------------------------------------------------- parse_label
def test_parse_label_names_numbers_and_errors():
    names = ["cat", "dog", "7"]
    assert parse_label("dog", names) == 1
    assert parse_label(" DOG ", names) == 1
    assert parse_label("0", names) == 0
    assert parse_label(1, names) == 1
    assert parse_label("7", names) == 2  # a name wins over a number
    for bad in ("3", "-1", "bird", ""):
        with pytest.raises(ValueError, match="unknown class") as e:
            parse_label(bad, names)
        assert "0=cat" in str(e.value)
    with pytest.raises(ValueError, match="class name or number"):
        parse_label(None, names)


# --------------------------------------------------------------------------- stored / noisy
def test_stored_oracle_has_flip_rate_zero(data, tmp_path):
    o = StoredOracle()
    o.setup(data, tmp_path)
    idx = np.arange(500)
    res = o.label(LabelRequest(round=1, idx=idx))
    np.testing.assert_array_equal(res.labels, data.targets[idx])


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_noisy_uniform_flip_rate_matches_config(data, tmp_path, rate):
    o = NoisyOracle(flip_rate=rate, seed=7)
    o.setup(data, tmp_path)
    idx = np.arange(data.n_train)  # 1,347 real digits
    res = o.label(LabelRequest(round=1, idx=idx))
    wrong = res.labels != data.targets[idx]
    # Binomial(1347, p): 4 standard deviations is < 0.05 for every p tested.
    assert abs(wrong.mean() - rate) < 0.05
    assert res.info["noise_rate"] == pytest.approx(wrong.mean())
    assert ((0 <= res.labels) & (res.labels < 10)).all()
    if rate:
        # Wrong answers are spread over the other classes, never the true one.
        flipped_to = (res.labels[wrong] - data.targets[idx][wrong]) % 10
        assert set(np.unique(flipped_to)) == set(range(1, 10))
    # Seeded: the same round gives the same answers, another round other answers.
    again = NoisyOracle(flip_rate=rate, seed=7)
    again.setup(data, tmp_path)
    np.testing.assert_array_equal(again.label(LabelRequest(round=1, idx=idx)).labels, res.labels)
    if rate:
        assert (again.label(LabelRequest(round=2, idx=idx)).labels != res.labels).any()


def test_noisy_confusion_matrix_is_followed(data, tmp_path):
    c = 10
    m = np.eye(c)
    m[3] = 0.0
    m[3, 3], m[3, 8] = 0.5, 0.5     # half of the 3s are answered 8
    m[1] = 0.0
    m[1, 7] = 1.0                   # every 1 is answered 7
    o = NoisyOracle(confusion=m.tolist(), seed=0)
    o.setup(data, tmp_path)
    idx = np.arange(data.n_train)
    y = data.targets[idx]
    res = o.label(LabelRequest(round=1, idx=idx))
    assert (res.labels[y == 1] == 7).all()
    threes = res.labels[y == 3]
    assert set(np.unique(threes)) == {3, 8}
    assert abs((threes == 8).mean() - 0.5) < 0.15  # ~135 threes
    others = ~np.isin(y, [1, 3])
    np.testing.assert_array_equal(res.labels[others], y[others])
    expected = ((y == 1).sum() + (threes == 8).sum()) / len(y)
    assert res.info["noise_rate"] == pytest.approx(expected)


def test_noisy_rejects_bad_settings(data, tmp_path):
    with pytest.raises(ValueError, match="flip_rate=1.5"):
        NoisyOracle(flip_rate=1.5)
    o = NoisyOracle(confusion=np.eye(3).tolist())
    with pytest.raises(ValueError, match="10x10"):
        o.setup(data, tmp_path)
    m = np.eye(10)
    m[4, 4] = 0.9
    with pytest.raises(ValueError, match=r"rows \[4\] do not sum to 1"):
        NoisyOracle(confusion=m.tolist()).setup(data, tmp_path)


def test_noisy_run_logs_the_true_noise_rate_of_each_round(store, tmp_path):
    cfg = compose(["oracle=noisy", "oracle.flip_rate=0.3", "trainer.max_epochs=2", "loop.initial_size=40",
                   "loop.query_size=40", "loop.rounds=2", "strategy=random"], tmp_path)
    res = Experiment(cfg, tmp_path / "job").run()
    state = PoolState.load(res.run_dir)
    y = digits().targets
    logged = dict(metric(res.tracking_uri, res.run_id, "noise_rate"))
    assert sorted(logged) == [40, 80, 120]
    for r, step in enumerate([40, 80, 120]):
        members = np.flatnonzero(state.labelled_round == r)
        assert len(members) == 40
        assert logged[step] == pytest.approx((state.labels[members] != y[members]).mean())
    overall = (state.labels[state.labelled_idx] != y[state.labelled_idx]).mean()
    assert 0.15 < overall < 0.45  # 120 labels at p = 0.3 (sd 0.042)


# --------------------------------------------------------------------------- answer store
def test_answer_store_persists_every_change_and_undo(tmp_path):
    s = AnswerStore(tmp_path, 2, np.array([10, 11, 12]))
    s.set(11, 4, 1.5)
    s.set(10, SKIP, 0.5)
    reread = AnswerStore(tmp_path, 2, np.array([10, 11, 12]))
    assert reread.answers[11]["label"] == 4 and reread.answers[10]["label"] == SKIP
    assert reread.next_unanswered() == 12 and not reread.complete
    assert reread.undo() == 10
    assert AnswerStore(tmp_path, 2, np.array([10, 11, 12])).next_unanswered() == 10
    res = reread.result()
    assert res.idx.tolist() == [11] and res.labels.tolist() == [4] and res.seconds.tolist() == [1.5]
    with pytest.raises(KeyError, match="not in the batch"):
        reread.set(99, 1, 0.0)
    # A resumed loop asks only for part of the batch: other answers stay on disk.
    part = AnswerStore(tmp_path, 2, np.array([12]))
    part.set(12, 0, 2.0)
    disk = json.loads((tmp_path / "answers" / "round_2.json").read_text())
    assert {a["index"] for a in disk["answers"]} == {11, 12}
    assert not list((tmp_path / "answers").glob(".*tmp"))  # no temp files left behind


# --------------------------------------------------------------------------- terminal oracle
def terminal(data, tmp_path, script: str):
    out = io.StringIO()
    o = TerminalOracle(input_stream=io.StringIO(script), output=out)
    o.setup(data, tmp_path)
    return o, out


def test_terminal_scripted_session(data, tmp_path):
    idx = np.array([5, 9, 11, 20, 30])
    req = LabelRequest(round=1, idx=idx, predicted=np.array([1, 2, 3, 4, 6]),
                       confidence=np.array([0.9, 0.8, 0.7, 0.6, 0.5]))
    script = "\n".join([
        "",        # 5: accept the suggestion (1)
        "foo",     # 9: invalid -> asked again
        "12",      # 9: invalid class number -> asked again
        "3",       # 9: class 3
        "s",       # 11: skip
        "u",       # undo the skip -> 11 again
        "7",       # 11: 7
        "?",       # 20: help, asked again
        "4",       # 20: 4
        "u",       # undo 20
        "2",       # 20: 2
        "s",       # 30: skip
    ]) + "\n"
    o, out = terminal(data, tmp_path, script)
    res = o.label(req)
    assert not res.pending
    assert dict(zip(res.idx.tolist(), res.labels.tolist(), strict=True)) == {5: 1, 9: 3, 11: 7, 20: 2}
    assert res.info["skipped"] == 1.0  # 30 returns to the pool
    assert len(res.seconds) == 4 and (res.seconds >= 0).all()
    text = out.getvalue()
    assert text.count("unknown class") == 2
    assert "undid the answer for index 11" in text and "undid the answer for index 20" in text
    assert "suggested: 1 (class 1, model confidence 90%)" in text
    assert (tmp_path / "queries" / "round_1" / "images" / "5.png").is_file()
    assert f"image: {tmp_path / 'queries' / 'round_1' / 'images' / '9.png'}" in text.replace("\n", "")


@pytest.mark.parametrize("how", ["NO_COLOR=1", "no colour system"])
def test_preview_without_colour_carries_the_grey_level(how, monkeypatch):
    """NO_COLOR=1 keeps rich's colour system but drops every colour: half blocks would all be
    the same blank block, so the preview switches to the character ramp."""
    from rich.console import Console

    if how == "NO_COLOR=1":
        monkeypatch.setenv("NO_COLOR", "1")
        console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=80)
        assert console.no_color and console.color_system is not None
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
        console = Console(file=io.StringIO(), force_terminal=False, width=80)
    ramp = np.repeat(np.linspace(0, 255, len(RAMP)).round().astype(np.uint8)[None, :], 2, axis=0)  # [2, 10]
    console.print(HalfBlockImage(ramp, width=len(RAMP)))
    lines = console.file.getvalue().splitlines()
    assert lines == [RAMP]  # one text row per two pixel rows, dark -> bright
    assert "\x1b[" not in console.file.getvalue()


def test_terminal_preview_of_a_digit_without_colour(data, monkeypatch):
    from rich.console import Console

    monkeypatch.setenv("NO_COLOR", "1")
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=80)
    console.print(terminal_preview(data.train, 0))
    text = console.file.getvalue()
    assert "\u2580" not in text  # no half blocks
    assert len(set(text) - {"\n"}) >= 4  # several grey levels, not one blank block
    assert set(text) <= set(RAMP) | {"\n"}


def test_terminal_round0_needs_a_class_and_end_of_input_quits(data, tmp_path):
    o, out = terminal(data, tmp_path, "\nundo\nu\n4\n")  # Enter without a suggestion, bad word, undo nothing
    res = o.label(LabelRequest(round=0, idx=np.array([1, 2])))
    assert res.pending  # input ended before sample 2: treated as q
    assert res.idx.tolist() == [1] and res.labels.tolist() == [4]
    text = out.getvalue()
    assert "no suggestion to accept" in text and "nothing to undo" in text


def test_terminal_quit_and_resume_through_the_loop(store, tmp_path):
    """q stops the run with what was given; loop.resume=true asks only for the rest; skipped
    samples return to the pool; labels_received and label_seconds reach MLflow."""
    y = digits().targets
    cfg = compose(["oracle=terminal", *TINY], tmp_path)
    exp = Experiment(cfg, tmp_path / "job")
    first = initial_indices(cfg, exp.data, exp.state)
    answers = [int(y[i]) for i in first]
    exp.oracle.input_stream = io.StringIO("".join(f"{a}\n" for a in answers[:3]) + "q\n")
    exp.oracle.console.file = io.StringIO()
    res = exp.run()
    assert res.status == "pending"
    state = PoolState.load(res.run_dir)
    assert state.n_labelled == 3
    np.testing.assert_array_equal(state.labels[first[:3]], answers[:3])
    assert state.progress.pending.idx == first[3:].tolist()
    assert metric(res.tracking_uri, res.run_id, "labels_received") == []  # round 0 not complete yet

    cfg2 = compose(["oracle=terminal", *TINY, "loop.resume=true"], tmp_path)
    exp2 = Experiment(cfg2, tmp_path / "job2")
    assert exp2.run_dir == res.run_dir
    # Rest of round 0, then round 1: accept, skip, two typed classes.
    script = "".join(f"{a}\n" for a in answers[3:]) + "\ns\n0\n1\n"
    exp2.oracle.input_stream = io.StringIO(script)
    exp2.oracle.console.file = io.StringIO()
    res2 = exp2.run()
    assert res2.status == "finished" and res2.run_id == res.run_id
    state = PoolState.load(res2.run_dir)
    np.testing.assert_array_equal(state.labels[first], answers)
    r1 = np.flatnonzero(state.labelled_round == 1)
    assert len(r1) == 3  # 4 queried, 1 skipped
    received = metric(res.tracking_uri, res.run_id, "labels_received")
    assert received == [(6, 6.0), (9, 3.0)]
    seconds = dict(metric(res.tracking_uri, res.run_id, "label_seconds"))
    total = dict(metric(res.tracking_uri, res.run_id, "label_seconds_total"))
    assert set(seconds) == set(total) == {6, 9}
    disk = json.loads((res.run_dir / "answers" / "round_0.json").read_text())
    assert total[6] == pytest.approx(sum(a["seconds"] for a in disk["answers"]))
    assert total[6] == pytest.approx(6 * seconds[6])
    assert dict(metric(res.tracking_uri, res.run_id, "skipped"))[9] == 1.0


# --------------------------------------------------------------------------- pseudo-labelling (CEAL)
@pytest.mark.slow  # 3 rounds of 30 epochs on ~1,200 pseudo-labels: 2.5 min on 2 loaded cores
def test_pseudo_labels_train_but_never_enter_the_pool_state(store, tmp_path, monkeypatch):
    import alframe.loop.experiment as loop

    seen = []
    real_fit = loop.fit

    def spy(cfg, data, state, round, run_dir, pseudo=None):
        seen.append((round, state.labelled_mask.copy(), None if pseudo is None else
                     (pseudo[0].copy(), pseudo[1].copy())))
        return real_fit(cfg, data, state, round, run_dir, pseudo=pseudo)

    monkeypatch.setattr(loop, "fit", spy)
    cfg = compose(["trainer.max_epochs=30", "loop.initial_size=30", "loop.query_size=10", "loop.rounds=2",
                   "loop.pseudo_label_threshold=0.25", "strategy=margin"], tmp_path)
    res = Experiment(cfg, tmp_path / "job").run()
    y = digits().targets
    state = PoolState.load(res.run_dir)
    assert state.n_labelled == 50  # the budget counts oracle labels only
    lab = state.labelled_idx
    np.testing.assert_array_equal(state.labels[lab], y[lab])
    assert (state.labels[state.pool_idx] == -1).all()
    counts = dict(metric(res.tracking_uri, res.run_id, "pseudo_labels"))
    accs = dict(metric(res.tracking_uri, res.run_id, "pseudo_label_accuracy"))
    assert seen[0][2] is None  # round 0 has no previous model
    for _, labelled_then, pseudo in seen[1:]:
        idx, yp = pseudo
        assert len(idx) > 0
        assert not labelled_then[idx].any()  # only pool samples
        assert state.available[idx].all()     # never validation samples
        step = int(labelled_then.sum())
        assert counts[step] == len(idx)
        assert accs[step] == pytest.approx((y[idx] == yp).mean())
    # Re-predicted every round: the sets differ between rounds.
    assert not np.array_equal(seen[1][2][0], seen[2][2][0])


def test_pseudo_label_threshold_is_validated(tmp_path):
    from alframe.errors import ConfigError
    cfg = compose(["loop.pseudo_label_threshold=1.5"], tmp_path)
    with pytest.raises(ConfigError, match="pseudo_label_threshold=1.5"):
        Experiment(cfg, tmp_path / "job")


@pytest.mark.parametrize("oracle_cls,computes", [(StoredOracle, False), (NoisyOracle, False), (TerminalOracle, True)])
def test_the_suggestion_is_computed_only_for_oracles_that_show_it(data, tmp_path, monkeypatch, oracle_cls, computes):
    import alframe.oracles.session as session_mod
    from alframe.models.cnn import SmallCNN
    from alframe.oracles.session import OracleSession

    calls = []
    real = session_mod.compute_outputs
    monkeypatch.setattr(session_mod, "compute_outputs", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    seen = []

    class Recorder(oracle_cls):  # the oracle's defaults; only the request matters here
        def label(self, request):  # the true labels, whatever the oracle would have asked
            seen.append(request)
            return LabelResult(idx=request.idx.copy(), labels=data.targets[request.idx])

    state = PoolState.create(data.n_train, holdout=data.val_idx)
    oracle = Recorder()
    oracle.setup(data, tmp_path)
    net = SmallCNN(data.num_classes, data.input_shape).eval()
    idx = state.pool_idx[:2]
    done, _ = OracleSession(oracle, data, state, lambda: None).ask(1, idx, net)
    assert done and state.labelled_idx.tolist() == idx.tolist()
    assert (len(calls) == 1) == computes
    assert (seen[0].predicted is not None) == computes
    if computes:
        assert seen[0].predicted.shape == (2,) and ((seen[0].confidence > 0) & (seen[0].confidence <= 1)).all()


def test_batch_metrics_survive_an_interrupt_before_the_next_log_and_are_sent_once(store, tmp_path, monkeypatch):
    """The metrics of a labelled batch travel with the next round's metrics; an interrupt while
    that round trains still sends them (with the KILLED run), and the resume does not repeat them."""
    import alframe.loop.experiment as loop_mod

    real_fit, calls = loop_mod.fit, []

    def fit_interrupted_in_round_1(cfg, data, state, round, *a, **k):
        calls.append(round)
        if round == 1 and calls.count(1) == 1:
            raise KeyboardInterrupt("interrupted during training")
        return real_fit(cfg, data, state, round, *a, **k)

    monkeypatch.setattr(loop_mod, "fit", fit_interrupted_in_round_1)
    cfg = compose([*TINY, "loop.rounds=2"], tmp_path)
    with pytest.raises(KeyboardInterrupt):
        Experiment(cfg, tmp_path / "job").run()
    state = PoolState.load(tmp_path / "job")
    assert state.n_labelled == 10 and state.progress.round == 1 and state.progress.evaluated_round == 0
    assert state.progress.unlogged == []  # handed to MLflow by the interrupted run
    run_id = state.progress.run_id
    client = MlflowClient(f"sqlite:///{store}")
    assert client.get_run(run_id).info.status == "KILLED"
    assert metric(f"sqlite:///{store}", run_id, "labels_received") == [(6, 6.0), (10, 4.0)]

    res = Experiment(compose([*TINY, "loop.rounds=2", "loop.resume=true"], tmp_path), tmp_path / "job").run()
    assert res.status == "finished" and res.run_id == run_id
    assert metric(res.tracking_uri, run_id, "labels_received") == [(6, 6.0), (10, 4.0), (14, 4.0)]
    assert [s for s, _ in metric(res.tracking_uri, run_id, "test_accuracy")] == [6, 10, 14]


def test_saved_unlogged_metrics_are_sent_on_resume(store, tmp_path):
    """A process killed after the labels were saved, before they reached MLflow (simulated by
    writing the record the labelling step saves): the resume sends them at their step."""
    cfg = compose([*TINY, "loop.rounds=2"], tmp_path)
    res = Experiment(cfg, tmp_path / "job").run()
    state = PoolState.load(res.run_dir)
    state.progress.finished, state.progress.evaluated_round = False, 1
    state.progress.unlogged = [{"step": 10, "metrics": {"label_seconds": 2.5}}]
    state.save(res.run_dir)
    Experiment(compose([*TINY, "loop.rounds=2", "loop.resume=true"], tmp_path), tmp_path / "job").run()
    assert metric(res.tracking_uri, res.run_id, "label_seconds") == [(10, 2.5)]
    assert PoolState.load(res.run_dir).progress.unlogged == []


def test_queries_csv_is_written_only_when_the_labelled_set_changes(store, tmp_path, monkeypatch):
    import alframe.loop.experiment as loop_mod

    writes = []
    real = loop_mod.write_queries_csv
    monkeypatch.setattr(loop_mod, "write_queries_csv", lambda path, state, *a: (writes.append(state.n_labelled),
                                                                                 real(path, state, *a))[1])
    exp = Experiment(compose([*TINY, "loop.rounds=2"], tmp_path), tmp_path / "job")
    res = exp.run()
    assert writes == [0, 6, 10, 14]  # the new run's empty set, then once per labelled batch
    path = res.run_dir / "queries.csv"
    state = PoolState.load(res.run_dir)
    rows = path.read_bytes().decode().splitlines()
    assert rows[0] == "round,index,label,class_name" and len(rows) == 1 + state.n_labelled
    assert rows[1:] == [f"{state.labelled_round[i]},{i},{state.labels[i]},{state.labels[i]}"
                        for i in sorted(state.labelled_idx, key=lambda i: (state.labelled_round[i], i))]
    inode = path.stat().st_ino
    exp._save()  # same labelled set: the file is not replaced
    assert path.stat().st_ino == inode and writes == [0, 6, 10, 14]
    path.unlink()  # a missing file is written again
    exp._save()
    assert path.read_bytes().decode().splitlines() == rows and writes[-1] == 14 and len(writes) == 5
