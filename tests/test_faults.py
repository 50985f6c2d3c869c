"""Fault injection: SIGKILL at 20 points spread over training, scoring, the oracle and the
saves (:mod:`alframe.faults`), then ``loop.resume=true`` until the run ends. Every resumed
run must end with the same labelled set and ``queries.csv`` as the uninterrupted run, and no
label given before the kill may be lost. At every kill point, while the doomed process is held
there alive, a second ``alframe`` on the run folder is refused in one line naming its PID; after
the kill the next session takes the folder over. Slow: about 150 short processes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alframe.data.digits import digits
from alframe.rundir.state import PoolState

pytestmark = pytest.mark.slow

RUN = ["strategy=bald", "strategy.mc_samples=4", "loop.pool_subset=100", "trainer.max_epochs=1",
       "+trainer.extra.limit_train_batches=2", "loop.initial_size=10", "loop.query_size=5", "loop.rounds=6"]
#: (point, n): killed the n-th time the point is reached in the killed process
KILL_POINTS = [("fit", 1), ("fit", 2), ("fit", 4), ("fit_done", 1), ("fit_done", 3), ("fit_done", 6),
               ("score", 1), ("score", 3), ("score", 5), ("query_done", 2), ("query_done", 4), ("oracle", 1),
               ("oracle", 3), ("oracle", 6), ("oracle_done", 2), ("oracle_done", 5), ("state_saved", 3),
               ("state_saved", 8), ("logged", 2), ("logged", 5)]
#: the files oracle stops at every batch, so each process sees each point about once
FILES_KILL_POINTS = [(p, 1) for p in ("fit", "fit_done", "score", "query_done", "oracle", "oracle_done",
                                      "state_saved", "logged")]


def session(run_dir: Path, oracle: str, kill: tuple[str, int] | None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("ALFRAME_KILL_AT", "ALFRAME_KILL_HOLD"):
        env.pop(var, None)
    args = [*RUN, f"oracle={oracle}", f"hydra.run.dir={run_dir}", "loop.resume=true",
            f"mlflow.tracking_uri=sqlite:///{run_dir.parent / 'mlflow.db'}", f"paths.output_root={run_dir.parent}"]
    cmd = [sys.executable, "-m", "alframe.cli.run", *args]
    if kill is None:
        return subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode
    hold = run_dir.parent / "held_at_kill_point"  # outside the run folder
    env.update(ALFRAME_KILL_AT=f"{kill[0]}:{kill[1]}", ALFRAME_KILL_HOLD=str(hold))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not hold.exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the session neither reached the kill point nor ended"
        time.sleep(0.05)
    if hold.exists():  # alive at the kill point: a second process on the folder must be refused
        second = subprocess.run(cmd, env={k: v for k, v in env.items() if not k.startswith("ALFRAME_KILL")},
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines() == [second.stderr.strip()]
        assert f"is in use by PID {proc.pid} on host" in second.stderr and str(run_dir) in second.stderr
        hold.unlink()
    return proc.wait(300)


def drive(run_dir: Path, oracle: str, kill: tuple[str, int] | None = None, kill_session: int = 0) -> dict[int, int]:
    """Run sessions until the run finishes (filling each files batch with the true labels);
    returns every label written by the labeller, to check none was lost."""
    truth, given, killed = digits().targets, {}, kill is None
    for s in range(60):
        rc = session(run_dir, oracle, kill if s == kill_session and not killed else None)
        if rc == -9:
            killed = True
            continue
        assert rc == 0, f"session {s} exited {rc}"
        state = PoolState.load(run_dir)
        if state.progress.finished:
            assert killed, f"kill point {kill} was never reached"
            return given
        pending = state.progress.pending
        path = run_dir / "queries" / f"round_{pending.round}" / "labels.csv"
        rows = list(csv.DictReader(path.open()))
        for r in rows:
            r["label"] = str(truth[int(r["index"])])
            given[int(r["index"])] = int(r["label"])
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    raise AssertionError("the run did not finish in 60 sessions")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = {}
    for oracle in ("stored", "files"):
        run_dir = tmp_path_factory.mktemp(oracle) / "run"
        drive(run_dir, oracle)
        out[oracle] = run_dir
    return out


@pytest.mark.parametrize("oracle,kill,kill_session",
                         [pytest.param(o, k, s, id=f"{o}-{k[0]}{k[1]}-session{s}") for o, k, s in
                          [("stored", k, 0) for k in KILL_POINTS]
                          + [("files", k, s) for k in FILES_KILL_POINTS for s in (1, 3)][:20]])
def test_sigkill_then_resume_equals_the_uninterrupted_run(oracle, kill, kill_session, reference, tmp_path):
    run_dir = tmp_path / "run"
    given = drive(run_dir, oracle, kill, kill_session)
    ref = reference[oracle]
    assert (run_dir / "queries.csv").read_text() == (ref / "queries.csv").read_text()
    state, want = PoolState.load(run_dir), PoolState.load(ref)
    np.testing.assert_array_equal(state.labelled_round, want.labelled_round)
    np.testing.assert_array_equal(state.labels, want.labels)
    for i, y in given.items():  # every label the person wrote is in the final labelled set
        assert state.labels[i] == y
    # every batch's metrics reached the run's MLflow record (a resume may send one twice, never none)
    assert batch_metrics(run_dir) == batch_metrics(ref)


def batch_metrics(run_dir: Path) -> set[tuple[int, float]]:
    """``(step, labels_received)`` pairs that the run logged to MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir.parent / 'mlflow.db'}")
    run_id = PoolState.load(run_dir).progress.run_id
    return {(m.step, m.value) for m in client.get_metric_history(run_id, "labels_received")}
