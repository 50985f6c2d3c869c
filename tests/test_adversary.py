"""The adversary, with real ``alframe`` processes: two processes on one run folder, two jobs racing
into one fixed folder, refused commands that must leave every file as it was, resumes that must
leave no stub folder, and misspelled keys with and without ``+``. Slow: about 20 processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from alframe.data.digits import digits
from alframe.rundir.state import PoolState

from .helpers import fill_labels

pytestmark = pytest.mark.slow

TINY = ["trainer.max_epochs=1", "loop.initial_size=10", "loop.query_size=5", "loop.rounds=1"]


def where(tmp_path: Path) -> list[str]:
    return [f"paths.output_root={tmp_path / 'out'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_orphans():
    """Kill what a test started and left running (a failed assertion must not leave a web oracle
    waiting for labels forever)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "alframe.cli.run", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _STARTED.append(proc)
    return proc


def alframe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = start(*args, cwd=cwd)
    out, err = proc.communicate(timeout=900)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def refused_in_one_line(res: subprocess.CompletedProcess, *parts: str) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


def mlflow_runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


# --------------------------------------------------------------------------- two processes, one folder
class Page:
    """The labelling page of a running ``alframe oracle=web`` process (URL read from its output)."""

    def __init__(self, proc: subprocess.Popen, timeout: float = 300):
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not (m := next((m for line in list(self.lines)
                              if (m := re.search(r"(http://127\.0\.0\.1:\d+/)\?token=([\w-]+)", line))), None)):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(self.lines) + proc.stderr.read()
            time.sleep(0.1)
        self.url, self.token, self.proc = m.group(1), m.group(2), proc  # the printed token URL

    def call(self, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(self.url + path.lstrip("/"), method="GET" if body is None else "POST",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "X-Alframe-Token": self.token})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def batch(self, round: int, timeout: float = 300) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            s = self.call("/api/state")
            if s["status"] == "labelling" and s["round"] == round:
                return [it["index"] for it in s["items"]]
            assert self.proc.poll() is None and time.monotonic() < deadline, s
            time.sleep(0.2)

    def label(self, idx: list[int], truth: np.ndarray) -> None:
        for i in idx:  # a write names the version of the state it was based on
            self.call("/api/label", {"index": i, "label": int(truth[i]), "version": self.call("/api/state")["version"]})


def test_a_second_web_process_on_the_run_is_refused_and_the_first_keeps_every_label(tmp_path):
    """The issue's reproduction: the same web-oracle run started twice with loop.resume=true (two
    ports). The second stops in one line naming the first's PID, changes nothing and leaves no
    folder; the first ends with exactly the labels given on its page, each round logged once."""
    truth = digits().targets
    args = ["oracle=web", "oracle.port=0", "oracle.timeout_s=900", "trainer.max_epochs=2", "loop.initial_size=6", "loop.query_size=4",
            "loop.rounds=1", "loop.resume=true", *where(tmp_path)]
    first = start(*args, cwd=tmp_path)
    page = Page(first)
    r0 = page.batch(0)
    page.label(r0[:3], truth)
    (run_dir,) = (tmp_path / "out" / "runs").glob("*/*")
    before = snapshot(tmp_path)
    for extra in ([], [f"hydra.run.dir={run_dir}"]):  # found under output_root; named
        second = alframe(*args, *extra, cwd=tmp_path)
        refused_in_one_line(second, f"run folder {run_dir} is in use by PID {first.pid} on host",
                            "nothing was changed")
        assert snapshot(tmp_path) == before
        assert list((tmp_path / "out" / "runs").glob("*/*")) == [run_dir]  # no stub folder
    page.label(r0[3:], truth)
    r1 = page.batch(1)
    assert len(r1) == 4 and not set(r1) & set(r0)
    page.label(r1, truth)
    assert first.wait(300) == 0, first.stderr.read()
    state = PoolState.load(run_dir)
    given = {**{i: int(truth[i]) for i in r0}, **{i: int(truth[i]) for i in r1}}
    assert {int(i): int(state.labels[i]) for i in state.labelled_idx} == given
    answers = json.loads((run_dir / "answers" / "round_0.json").read_text())["answers"]
    assert [a["index"] for a in answers] == r0
    client, runs = mlflow_runs(tmp_path)
    assert [r.info.run_id for r in runs] == [state.progress.run_id]
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "test_accuracy")] == [6, 10]
    assert sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "labels_received")) \
        == [(6, 6.0), (10, 4.0)]


def test_a_second_process_on_a_fixed_folder_is_refused_while_the_first_trains(tmp_path):
    run_dir = tmp_path / "R"
    args = ["trainer.max_epochs=150", "loop.initial_size=20", "loop.query_size=10", "loop.rounds=2",
            f"hydra.run.dir={run_dir}", *where(tmp_path)]
    first = start(*args, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not (run_dir / "pool_state.npz").exists():  # training of round 0 has begun
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.1)
    for extra in (["loop.resume=true"], [], ["loop.resume=true", "loop.rounds=5"]):
        refused_in_one_line(alframe(*args, *extra, cwd=tmp_path), f"is in use by PID {first.pid} on host")
    assert first.poll() is None, "the first process ended before the second ones were tried"
    assert first.wait(600) == 0, first.stderr.read()
    state = PoolState.load(run_dir)
    truth = digits().targets
    np.testing.assert_array_equal(state.labels[state.labelled_idx], truth[state.labelled_idx])
    assert state.n_labelled == 40 and state.progress.finished
    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "test_accuracy")] == [20, 30, 40]


# --------------------------------------------------------------------------- jobs racing into one folder
def test_two_jobs_racing_into_one_fixed_run_folder(tmp_path):
    run_dir = tmp_path / "R"
    args = ["trainer.max_epochs=60", "loop.rounds=1", f"hydra.run.dir={run_dir}", *where(tmp_path)]
    procs = [start(*args, cwd=tmp_path) for _ in range(2)]
    results = [(p.wait(600), p.pid, p.stderr.read()) for p in procs]
    (winner,) = [r for r in results if r[0] == 0]
    (loser,) = [r for r in results if r[0] != 0]
    lines = loser[2].strip().splitlines()
    assert loser[0] == 2 and len(lines) == 1, loser[2]
    assert f"is in use by PID {winner[1]} on host" in lines[0] or "already holds a run" in lines[0]
    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1 and runs[0].data.tags["run_dir"] == str(run_dir)
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "test_accuracy")] == [20, 30]
    assert PoolState.load(run_dir).progress.finished


def test_two_sweeps_racing_into_one_fixed_sweep_folder(tmp_path):
    sweep = ["-m", "strategy=random,margin", *TINY, "trainer.max_epochs=30", f"hydra.sweep.dir={tmp_path / 'S'}",
             *where(tmp_path)]
    procs = [start(*sweep, cwd=tmp_path) for _ in range(2)]
    results = sorted((p.wait(900), p.stderr.read()) for p in procs)
    assert [rc for rc, _ in results] == [0, 2], results
    refusal = [line for line in results[1][1].splitlines() if line.startswith("alframe: error:")]
    assert len(refusal) == 1 and ("is in use by PID" in refusal[0] or "already holds a run" in refusal[0])
    jobs = sorted((tmp_path / "S").glob("[0-9]_*"))
    assert len(jobs) == 2 and "strategy=random" in jobs[0].name and "strategy=margin" in jobs[1].name
    client, runs = mlflow_runs(tmp_path)
    assert sorted(r.data.tags["run_dir"] for r in runs) == [str(j) for j in jobs]  # one run per folder
    for j in jobs:
        assert PoolState.load(j).progress.finished and PoolState.load(j).n_labelled == 15


# --------------------------------------------------------------------------- nothing changed, nothing left
def test_refused_commands_leave_every_file_as_it_was(tmp_path):
    run_dir = tmp_path / "R"
    args = [*TINY, f"hydra.run.dir={run_dir}", *where(tmp_path)]
    assert alframe(*args, cwd=tmp_path).returncode == 0
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "alframe.log").is_file()
    before = snapshot(tmp_path)
    refused_in_one_line(alframe(*args, cwd=tmp_path), "already holds a run", "nothing was changed")
    assert snapshot(tmp_path) == before
    refused_in_one_line(alframe(*args, "strategy=margin", "loop.resume=true", cwd=tmp_path),
                        "holds a run of another configuration")
    assert snapshot(tmp_path) == before


def test_resumes_leave_no_stub_folder(tmp_path):
    args = ["oracle=files", *TINY, *where(tmp_path)]
    assert alframe(*args, cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "out" / "runs").glob("*/*")
    record = snapshot(run_dir / ".hydra")
    fill_labels(run_dir / "queries" / "round_0" / "labels.csv", digits().targets)
    assert alframe(*args, "loop.resume=true", cwd=tmp_path).returncode == 0  # found under output_root
    assert list((tmp_path / "out" / "runs").glob("*/*")) == [run_dir]
    fill_labels(run_dir / "queries" / "round_1" / "labels.csv", digits().targets)
    assert alframe(*args, f"loop.resume={run_dir}", cwd=tmp_path).returncode == 0  # named
    assert list((tmp_path / "out" / "runs").glob("*/*")) == [run_dir]
    assert PoolState.load(run_dir).progress.finished and snapshot(run_dir / ".hydra") == record
    assert sum("resumed with:" in line for line in (run_dir / "alframe.log").read_text().splitlines()) == 2


@pytest.mark.parametrize("key,message", [
    ("loop.query_szie=5", "loop.query_szie is not a key of loop: did you mean loop.query_size?"),
    ("model.net.chanels=8", "model.net.chanels is not a key of model.net (alframe.models.cnn.SmallCNN): did you "
                            "mean model.net.channels?"),
])
@pytest.mark.parametrize("prefix", ["", "+"])
def test_misspelled_keys_are_refused_before_any_folder(prefix, key, message, tmp_path):
    res = alframe(f"{prefix}{key}", *where(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.splitlines() == [f"alframe: error: {message}"]
    assert list(tmp_path.iterdir()) == []
