"""One run folder, one process, and a person's labels never written from a stale copy: the run
folder lock (:mod:`alframe.rundir.lock`), the files the command writes only once its folder is
locked and checked (:mod:`alframe.cli.jobfiles`), and keys that nothing reads
(:mod:`alframe.config.keys`, :mod:`alframe.cli.precheck`). Fast: the second process, where one is
the point, is a tiny holder that imports only the lock module; commands run in this process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict

from alframe.config.keys import unknown_keys
from alframe.data.digits import digits
from alframe.errors import RunFolderBusy
from alframe.loop.experiment import Experiment
from alframe.oracles.answers import AnswerStore
from alframe.rundir import lock
from alframe.rundir.lock import LOCK_FILE

from .conftest import CONFIG_DIR, compose
from .helpers import cli_in_process, fill_labels

HOST = socket.gethostname()
HOLDER = ("import sys, time; from alframe.rundir import lock; lock.acquire(sys.argv[1]); "
          "print('held', flush=True); time.sleep(600)")
PENDING = ["oracle=files", "trainer.max_epochs=1", "loop.initial_size=10", "loop.query_size=5", "loop.rounds=1"]


@pytest.fixture
def holder():
    """``holder(folder)``: another process that locks ``folder`` and sleeps; killed at the end."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                                cwd=Path(CONFIG_DIR).parent)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for p in procs:
        p.kill()
        p.wait()


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: bytes and modification time."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- the lock
def test_a_second_process_is_refused_naming_the_holder_and_takes_over_after_a_kill(tmp_path, holder):
    folder = tmp_path / "run"
    proc = holder(folder)
    line = json.loads((folder / LOCK_FILE).read_text())
    assert (line["pid"], line["host"]) == (proc.pid, HOST)
    before = snapshot(tmp_path)
    with pytest.raises(RunFolderBusy, match=rf"^run folder {re.escape(str(folder.resolve()))} is in use by PID "
                                            rf"{proc.pid} on host {re.escape(HOST)} \(holding it since "
                                            rf"{re.escape(line['since'])}\); nothing was changed"):
        lock.acquire(folder)
    assert snapshot(tmp_path) == before and not lock.holds(folder)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock.acquire(folder)  # the kernel dropped the killed holder's lock: taken over, no manual step
    try:
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        lock.release(folder)
    assert (folder / LOCK_FILE).read_bytes() == b""  # a clean release names no holder


def test_undo_leaves_the_folder_as_it_was_and_holds_are_counted(tmp_path):
    new = tmp_path / "a" / "b"
    lock.acquire(new)
    assert (new / LOCK_FILE).is_file()
    lock.release(new, undo=True)
    assert list(tmp_path.iterdir()) == []  # the folders it made are gone too
    old = tmp_path / "old"
    old.mkdir()
    (old / LOCK_FILE).write_bytes(b'{"pid": 1}\n')  # a killed holder's line
    os.utime(old / LOCK_FILE, ns=(10**9, 2 * 10**9))
    lock.acquire(old)
    assert json.loads((old / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.acquire(old)  # the same process again: counted, not refused
    lock.release(old, undo=True)
    assert lock.holds(old)
    lock.release(old, undo=True)
    assert not lock.holds(old)
    assert (old / LOCK_FILE).read_bytes() == b'{"pid": 1}\n' and (old / LOCK_FILE).stat().st_mtime_ns == 2 * 10**9


def test_answers_are_written_only_while_no_other_process_holds_the_folder(tmp_path, holder):
    run = tmp_path / "run"
    store = AnswerStore(run, 1, np.array([3, 5]))
    store.set(3, 1, 0.5)  # nobody holds the folder (a unit test of an oracle): written
    proc = holder(run)
    saved = (run / "answers" / "round_1.json").read_bytes()
    with pytest.raises(RunFolderBusy, match=f"in use by PID {proc.pid} on host"):
        store.set(5, 2, 0.5)
    assert (run / "answers" / "round_1.json").read_bytes() == saved
    proc.kill()
    proc.wait()
    store.set(5, 2, 0.5)
    assert [(a["index"], a["label"]) for a in json.loads((run / "answers" / "round_1.json").read_text())["answers"]] \
        == [(3, 1), (5, 2)]


# --------------------------------------------------------------------------- experiments in this process
def test_an_experiment_on_a_held_run_is_refused_and_a_resume_elsewhere_leaves_no_job_folder(
        tmp_path, store, holder):
    res = Experiment(compose(PENDING, tmp_path), tmp_path / "job").run()
    assert res.status == "pending" and not lock.holds(res.run_dir)  # let go when run() ended
    resume = compose([*PENDING, "loop.resume=true"], tmp_path)
    proc = holder(res.run_dir)
    before = snapshot(tmp_path)
    with pytest.raises(RunFolderBusy, match=f"{re.escape(str(res.run_dir))} is in use by PID {proc.pid} "):
        Experiment(resume, tmp_path / "job2")
    assert snapshot(tmp_path) == before and not (tmp_path / "job2").exists()
    proc.kill()
    proc.wait()
    exp = Experiment(resume, tmp_path / "job2")  # the run is found under paths.output_root and taken over
    assert exp.run_dir == res.run_dir and exp.resuming and lock.holds(res.run_dir)
    assert not (tmp_path / "job2").exists()  # the job's own folder was let go as it was found
    exp.claim.release()


# --------------------------------------------------------------------------- the command
def common(tmp_path: Path, store: Path) -> list[str]:
    return [*PENDING, f"mlflow.tracking_uri=sqlite:///{store}", f"paths.output_root={tmp_path / 'out'}"]


def test_a_refused_command_changes_no_file(tmp_path, store, monkeypatch, capsys):
    """The issue's reproduction: the same command twice into one hydra.run.dir. Hydra's record
    (.hydra/), the job log and the lock file stay byte for byte, times included."""
    run_dir = tmp_path / "R"
    args = [*common(tmp_path, store), f"hydra.run.dir={run_dir}"]
    first = cli_in_process(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert first.returncode == 0, first.stderr
    assert {p.name for p in (run_dir / ".hydra").iterdir()} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().splitlines() == [f"- {a}" for a in args[:-1]]  # hydra.* are not task overrides
    before = snapshot(tmp_path)
    for extra, message in [([], "already holds a run (pool_state.npz, queries); nothing was changed"),
                           (["strategy=margin", "loop.resume=true"], "holds a run of another configuration"),
                           (["loop.initial_size=0"], "loop.initial_size=0 is invalid"),
                           (["+loop.query_szie=5"], "loop.query_szie is not a key of loop")]:
        out = cli_in_process(*args, *extra, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
        assert out.returncode == 2, (extra, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, (extra, out.stderr)
        assert snapshot(tmp_path) == before, extra


def test_a_resume_writes_only_into_the_run_it_continues(tmp_path, store, monkeypatch, capsys):
    first = cli_in_process(*common(tmp_path, store), cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert first.returncode == 0, first.stderr
    (run_dir,) = (tmp_path / "out" / "runs").glob("*/*")
    record = snapshot(run_dir / ".hydra")
    fill_labels(run_dir / "queries" / "round_0" / "labels.csv", digits().targets)
    second = cli_in_process(*common(tmp_path, store), "loop.resume=true", cwd=tmp_path, monkeypatch=monkeypatch,
                            capsys=capsys)
    assert second.returncode == 0, second.stderr
    assert list((tmp_path / "out" / "runs").glob("*/*")) == [run_dir]  # no stub folder of the resume
    assert snapshot(run_dir / ".hydra") == record  # the record of how the run was made
    resumed = [line for line in (run_dir / "alframe.log").read_text().splitlines() if "resumed with:" in line]
    assert len(resumed) == 1 and resumed[0].endswith(f"loop.resume={run_dir}")
    assert not lock.holds(run_dir)


# --------------------------------------------------------------------------- keys nothing reads
@pytest.mark.parametrize("args,message", [
    (["loop.query_szie=5"], "loop.query_szie is not a key of loop: did you mean loop.query_size?"),
    (["+loop.query_szie=5"], "loop.query_szie is not a key of loop: did you mean loop.query_size?"),
    (["++trainer.max_epoch=3"], "trainer.max_epoch is not a key of trainer: did you mean trainer.max_epochs?"),
    (["model.net.chanels=3"], "model.net.chanels is not a key of model.net (alframe.models.cnn.SmallCNN): "
                              "did you mean model.net.channels?"),
    (["model=lenet5", "+model.net.channels=3"], "model.net.channels is not a key of model.net "
     "(alframe.models.cnn.LeNet5): its keys are dropout, input_shape, num_classes, padding"),
    (["+seeed=1"], "seeed is not a key of the config: did you mean seed?"),
    (["-m", "strategy=bald,margin", "+strategy.mc_sample=4"],
     "strategy.mc_sample is not a key of strategy (alframe.strategies.bayesian.BALD): did you mean "
     "strategy.mc_samples?"),
    (["oracle=noisy", "oracle.flip_rat=0.2", "loop.roundz=2"],
     "loop.roundz is not a key of loop: did you mean loop.rounds?; oracle.flip_rat is not a key of oracle "
     "(alframe.oracles.noisy.NoisyOracle): did you mean oracle.flip_rate?"),
])
def test_keys_nothing_reads_are_refused_with_the_closest_key(args, message, tmp_path, monkeypatch, capsys):
    out = cli_in_process(*args, f"paths.output_root={tmp_path / 'out'}", cwd=tmp_path, monkeypatch=monkeypatch,
                         capsys=capsys)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"alframe: error: {message}"]
    assert list(tmp_path.iterdir()) == []  # no folder, no MLflow store


@pytest.mark.parametrize("group", ["trainer", "experiment"])  # options of the other groups are where keys are learnt
def test_every_shipped_option_has_only_keys_that_are_read(group, tmp_path):
    for option in sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml")):
        assert unknown_keys(compose([f"{group}={option}"], tmp_path)) == [], option


def test_free_and_constructor_keys_are_accepted(tmp_path):
    cfg = compose(["+trainer.extra.limit_val_batches=2",
                   "+model.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 3}",
                   "+model.optimizer.amsgrad=true", "dataset=mnist", "+dataset.train_size=300"], tmp_path)
    assert unknown_keys(cfg) == []
    with open_dict(cfg):
        cfg.model.scheduler.step_sise = 3
    assert unknown_keys(cfg) == ["model.scheduler.step_sise is not a key of model.scheduler "
                                 "(torch.optim.lr_scheduler.StepLR): did you mean model.scheduler.step_size?"]
