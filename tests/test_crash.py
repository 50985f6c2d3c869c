"""Crash safety: a person labels part of a batch, the process is killed with SIGKILL; the
restarted run (loop.resume=true) keeps those labels and continues the same MLflow run. While the
first process lives, a second one on its run folder is refused; after the kill it takes over."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from alframe.data.digits import digits
from alframe.loop.experiment import Experiment
from alframe.loop.selection import initial_indices
from alframe.rundir.state import PoolState

from .conftest import compose

OVERRIDES = ["oracle=terminal", "oracle.preview=false", "trainer.max_epochs=2", "loop.initial_size=6",
             "loop.query_size=4", "loop.rounds=1", "strategy=margin"]


def alframe(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "alframe.cli.run", *OVERRIDES, f"paths.output_root={out}",
           f"mlflow.tracking_uri=sqlite:///{out}/mlflow.db", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=out)


def wait_for_answers(out: Path, round: int, n: int, proc: subprocess.Popen, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in out.glob(f"runs/**/answers/round_{round}.json"):
            try:
                if len(json.loads(path.read_text())["answers"]) >= n:
                    return path.parent.parent
            except (ValueError, KeyError):
                pass  # never happens with atomic writes; tolerated while polling
        if proc.poll() is not None:
            raise AssertionError(f"alframe exited early ({proc.returncode}):\n{proc.stdout.read()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no {n} answers for round {round} within {timeout} s:\n{proc.stdout.read()}")


@pytest.mark.usefixtures("store")  # a copied, initialised MLflow store
def test_sigkill_while_labelling_loses_nothing(tmp_path):
    data = digits()
    y = data.targets
    first = initial_indices(compose(OVERRIDES, tmp_path), data, PoolState.create(data.n_train, data.val_idx))
    # Session 1: the whole initial set, then 2 of the 4 round-1 samples, then SIGKILL.
    proc = alframe(tmp_path)
    proc.stdin.write("".join(f"{y[i]}\n" for i in first) + "3\n3\n")
    proc.stdin.flush()
    run_dir = wait_for_answers(tmp_path, 1, 2, proc)
    second = alframe(tmp_path, "loop.resume=true")  # while the first lives: refused, naming it
    err = second.communicate(timeout=300)[0]
    assert second.returncode == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"alframe: error: run folder {run_dir} is in use by PID {proc.pid} on host "
                           f"{socket.gethostname()} (holding it since ")
    assert "nothing was changed" in line and list(tmp_path.glob("runs/*/*")) == [run_dir]  # no stub
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    killed = PoolState.load(run_dir)
    run_id = killed.progress.run_id
    assert killed.progress.pending.round == 1
    answered_r1 = [a["index"] for a in json.loads((run_dir / "answers" / "round_1.json").read_text())["answers"]]
    assert len(answered_r1) == 2

    # Restart with loop.resume=true (in this process, to spare a second interpreter start):
    # the 2 saved answers are used without asking; only the other 2 samples are asked.
    exp = Experiment(compose([*OVERRIDES, "loop.resume=true"], tmp_path), tmp_path / "job2")
    assert exp.run_dir == run_dir
    exp.oracle.input_stream = io.StringIO("5\n5\n")
    exp.oracle.console.file = transcript = io.StringIO()
    res = exp.run()
    assert res.status == "finished" and res.run_id == run_id
    assert "2 answers of this batch were saved earlier" in transcript.getvalue()
    assert transcript.getvalue().count("label> ") == 2
    state = PoolState.load(run_dir)
    assert state.progress.run_id == run_id and state.progress.finished
    np.testing.assert_array_equal(state.labels[first], y[first])  # round 0, all from session 1
    r1 = np.flatnonzero(state.labelled_round == 1)
    assert len(r1) == 4
    assert {int(i): int(state.labels[i]) for i in r1} == {**{i: 3 for i in answered_r1},
                                                          **{int(i): 5 for i in r1 if i not in answered_r1}}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("alframe").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # the same run, no second one
    assert runs[0].info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "test_accuracy"))
    assert steps == [6, 10]
    received = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "labels_received"))
    assert received == [(6, 6.0), (10, 4.0)]
