"""Nothing lost, nothing silently different: run folders that are never written over, exact
resume for every strategy, errors before any work, and interrupts that save and say how to
go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from alframe.data.digits import digits
from alframe.errors import ConfigError, StateMismatchError
from alframe.loop.experiment import Experiment, run_experiment
from alframe.rundir.state import PoolState

from .conftest import CONFIG_DIR, compose
from .helpers import cli_in_process, fill_labels, write_unlabelled

TINY = ["trainer.max_epochs=1", "loop.initial_size=10", "loop.query_size=5"]
STRATEGIES = sorted(p.stem for p in (Path(CONFIG_DIR) / "strategy").glob("*.yaml"))



def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "alframe.cli.run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------- run folders
def test_resume_true_looks_in_the_commands_own_folder_first(tmp_path, store, monkeypatch, capsys):
    """The issue's reproduction, through the real command: an explicit hydra.run.dir, labels
    filled in, resumed with loop.resume=true: the same MLflow run continues with those labels."""
    run_dir, db = tmp_path / "RUN", f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["oracle=files", "loop.query_size=5", "loop.rounds=1", "loop.initial_size=10", "trainer.max_epochs=1",
              f"hydra.run.dir={run_dir}", f"mlflow.tracking_uri={db}", f"paths.output_root={tmp_path / 'elsewhere'}"]
    first = cli_in_process(*common, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert first.returncode == 0, first.stderr
    given = fill_labels(run_dir / "queries" / "round_0" / "labels.csv", digits().targets)
    second = cli_in_process(*common, "loop.resume=true", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert second.returncode == 0, second.stderr
    assert "starting a new run" not in second.stdout
    state = PoolState.load(run_dir)
    assert {int(i): int(state.labels[i]) for i in state.labelled_idx} == given  # round 0 = the person's labels
    client = MlflowClient(db)
    runs = client.search_runs([client.get_experiment_by_name("alframe").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == state.progress.run_id


@pytest.mark.parametrize("oracle,extra", [("files", []), ("web", ["oracle.port=0", "oracle.timeout_s=0.2"]),
                                          ("terminal", [])])
def test_no_run_writes_into_a_folder_holding_another_run(oracle, extra, tmp_path, store, monkeypatch):
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # the terminal oracle sees end of input: pending
    over = [f"oracle={oracle}", *TINY, "loop.rounds=1", *extra]
    res = Experiment(compose(over, tmp_path), tmp_path / "job").run()
    assert res.status == "pending"
    before = {p: p.read_bytes() for p in res.run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"job already holds a run \(pool_state.npz.*loop.resume=true.*another folder"):
        Experiment(compose(over, tmp_path), tmp_path / "job")
    with pytest.raises(StateMismatchError, match="another configuration"):
        Experiment(compose([*over, "strategy=margin", "loop.resume=true"], tmp_path), tmp_path / "job")
    assert {p: p.read_bytes() for p in res.run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_multirun_resume_finds_each_jobs_sweep_subfolder(tmp_path):
    sweep = ["-m", "oracle=files", "strategy=random,entropy", *TINY, "loop.rounds=1",
             f"hydra.sweep.dir={tmp_path / 'S'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}",
             f"paths.output_root={tmp_path / 'elsewhere'}"]
    assert cli(*sweep, cwd=tmp_path).returncode == 0
    jobs = sorted((tmp_path / "S").glob("*_*"))
    assert len(jobs) == 2
    for j in jobs:
        fill_labels(j / "queries" / "round_0" / "labels.csv", digits().targets)
    def run_files():  # what the runs hold (Hydra rewrites its .hydra/ configs and appends to the job log)
        return {p: p.read_bytes() for p in (tmp_path / "S").rglob("*")
                if p.is_file() and ".hydra" not in p.parts and p.suffix not in (".log", ".yaml")}

    before = run_files()
    refused = cli(*sweep, cwd=tmp_path)  # the same sweep again without loop.resume: refused, nothing touched
    assert refused.returncode == 2 and "already holds a run" in refused.stderr and "loop.resume=true" in refused.stderr
    assert run_files() == before and any(p.name == "pool_state.npz" for p in before)
    resumed = cli(*sweep, "loop.resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for j in jobs:
        assert PoolState.load(j).n_labelled == 10
        assert (j / "queries" / "round_1" / "labels.csv").is_file()


# --------------------------------------------------------------------------- exact resume
def resume_equals_uninterrupted(strategy: str, tmp_path: Path) -> None:
    over = [f"strategy={strategy}", *TINY, "loop.pool_subset=150", "strategy.mc_samples=4"] \
        if "mc_samples" in (Path(CONFIG_DIR) / "strategy" / f"{strategy}.yaml").read_text() \
        else [f"strategy={strategy}", *TINY, "loop.pool_subset=150"]
    full = run_experiment(compose([*over, "loop.rounds=3"], tmp_path / "a"), tmp_path / "a" / "job")
    run_experiment(compose([*over, "loop.rounds=1"], tmp_path / "b"), tmp_path / "b" / "job")
    first = run_experiment(compose([*over, "loop.rounds=3", "loop.resume=true"], tmp_path / "b"), tmp_path / "b" / "x")
    assert (first.run_dir / "queries.csv").read_text() == (full.run_dir / "queries.csv").read_text(), strategy


@pytest.mark.parametrize("strategy", ["bald", "power_bald"])
def test_mc_dropout_queries_are_the_same_after_a_resume(strategy, tmp_path, mlflow_template):
    import shutil
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(mlflow_template, tmp_path / sub / "mlflow.db")
    resume_equals_uninterrupted(strategy, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_resumes_to_the_same_queries(strategy, tmp_path):
    resume_equals_uninterrupted(strategy, tmp_path)


# --------------------------------------------------------------------------- errors before work
def test_mc_strategy_on_a_network_without_dropout_is_a_config_error(tmp_path):
    cfg = compose(["strategy=bald", "model.net.dropout=0", "model.net.dropout_in=0"], tmp_path)
    with pytest.raises(ConfigError, match="strategy=bald samples MC dropout, but model=small_cnn has no dropout"):
        Experiment(cfg, tmp_path / "job")


@pytest.mark.parametrize("override,message", [
    ("model.optimizer.lr=-1", "Invalid learning rate: -1"),
    ("+trainer.extra.max_steps=abc", "trainer"),
    ("trainer.precision=banana", "banana"),
])
def test_bad_training_values_are_config_errors_before_any_run(override, message, tmp_path, store):
    with pytest.raises(ConfigError, match=message):
        Experiment(compose([override], tmp_path), tmp_path / "job")
    client = MlflowClient(f"sqlite:///{store}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_config_error_on_the_command_line_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    out = cli_in_process("model.optimizer.lr=-1", f"paths.output_root={tmp_path / 'out'}",
                         f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path,
                         monkeypatch=monkeypatch, capsys=capsys)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "alframe: error: model.optimizer/model.scheduler (torch.optim.Adam): Invalid learning rate: -1"]
    assert not (tmp_path / "out" / "runs").exists()
    assert not (tmp_path / "m.db").exists()  # no MLflow store, no run


# --------------------------------------------------------------------------- interrupts
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_interrupt_saves_marks_killed_and_prints_the_resume_command(sig, tmp_path, store):
    db = f"sqlite:///{store}"  # an initialised copy: no migrations in the timed-out window
    args = ["trainer.max_epochs=400", "loop.rounds=1", f"paths.output_root={tmp_path}", f"mlflow.tracking_uri={db}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "alframe.cli.run", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(tmp_path.glob("runs/*/*/pool_state.npz")):  # training of round 0 has begun
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    run_dir = next(tmp_path.glob("runs/*/*/pool_state.npz")).parent
    assert "interrupted; the state is saved in" in err and f"loop.resume={run_dir}" in err
    client = MlflowClient(db)
    (run,) = client.search_runs([client.get_experiment_by_name("alframe").experiment_id])
    assert run.info.status == "KILLED"
    command = err.strip().splitlines()[-1].split()
    assert command[0] == "alframe" and "trainer.max_epochs=400" in command


# --------------------------------------------------------------------------- parallel sweep
@pytest.mark.slow
def test_eight_parallel_jobs_on_a_fresh_sqlite_store(tmp_path):
    """8 jobs of one sweep at once (joblib, 8 workers) creating the store and the experiment
    together: 8 distinct FINISHED runs, no error."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "alframe.cli.run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=8",
           "strategy=random,entropy", "seed=0,1,2,3", "loop.rounds=1", "trainer.max_epochs=1",
           f"paths.output_root={tmp_path}", "mlflow.experiment_name=parallel"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "alframe: error" not in proc.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("parallel").experiment_id])
    assert len({r.info.run_id for r in runs}) == 8
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({(r.data.tags["strategy"], r.data.tags["seed"]) for r in runs}) == 8


# --------------------------------------------------------------------------- folder datasets
def test_a_changed_image_folder_stops_the_resume_naming_the_files(tmp_path, store):
    """Replace one image by another (same number of files), then rename one: the resume stops,
    naming what changed, and the person's label files stay as they were."""

    root = tmp_path / "pool"
    files = write_unlabelled(root)
    over = ["dataset=unlabelled_folder", f"dataset.root={root}", "dataset.classes=[cat,dog,fish]",
            "dataset.image_size=16", "oracle=files", "trainer.max_epochs=1", "loop.initial_size=4",
            "loop.query_size=2", "loop.rounds=1"]
    res = Experiment(compose(over, tmp_path), tmp_path / "job").run()
    assert res.status == "pending"
    before = (res.run_dir / "queries" / "round_0" / "labels.csv").read_bytes()
    rel = [f.relative_to(root).as_posix() for f in files]
    files[0].write_bytes(files[1].read_bytes())
    resume = [*over, "loop.resume=true"]
    with pytest.raises(StateMismatchError, match=rf"changed since the run .*\(changed 1: {rel[0]}\)"):
        Experiment(compose(resume, tmp_path), tmp_path / "job")
    files[2].rename(root / "renamed.png")
    with pytest.raises(StateMismatchError, match=rf"added 1: renamed.png; removed 1: {rel[2]}; changed 1: {rel[0]}"):
        Experiment(compose(resume, tmp_path), tmp_path / "job")
    assert (res.run_dir / "queries" / "round_0" / "labels.csv").read_bytes() == before
