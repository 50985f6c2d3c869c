"""Sweeps: a multirun on digits (in process; through joblib's workers in the slow suite), the report over it, launcher configs,
concurrent creation of a fresh SQLite store, and ``loop.target_accuracy``."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from alframe import reporting as rp
from alframe.cli import report as report_cli
from alframe.errors import ConfigError

from .conftest import CONFIG_DIR, FAST
from .helpers import cli_in_process, compose_shared

REPO = Path(CONFIG_DIR).parent


SWEEP = ["strategy=random,entropy", "seed=0,1", "loop.rounds=1", "trainer.max_epochs=1",
         "mlflow.experiment_name=sweep_test"]


def test_sweep_two_strategies_two_seeds_then_report(tmp_path, store, monkeypatch, capsys):
    """``alframe -m`` with Hydra's basic launcher (jobs one after another, in this process), on a
    initialised SQLite store: 4 runs, 4 dirs, one sweep id, job-prefixed rows, the curves link, a report."""
    proc = cli_in_process("-m", *SWEEP, f"paths.output_root={tmp_path}", cwd=tmp_path,
                          monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_sweep(tmp_path, proc.stdout)


@pytest.mark.slow
def test_joblib_sweep_two_strategies_two_seeds_then_report(tmp_path):
    """The same sweep through the real command, 2 jobs at a time in joblib's worker processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [str(Path(sys.executable).parent / "alframe"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
           *SWEEP, f"paths.output_root={tmp_path}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    check_sweep(tmp_path, proc.stdout)


def check_sweep(tmp_path: Path, stdout: str) -> None:
    """What a 2 strategies x 2 seeds sweep under ``tmp_path`` must have stored and printed."""
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1
    job_dirs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and (p / "pool_state.json").is_file())
    assert len(job_dirs) == 4 and all((p / "queries.csv").is_file() for p in job_dirs)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweep_test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4
    assert {r.data.tags["sweep_id"] for r in runs} == {sweeps[0].name}
    assert sorted((r.data.tags["strategy"], r.data.tags["seed"]) for r in runs) == \
        [("entropy", "0"), ("entropy", "1"), ("random", "0"), ("random", "1")]
    assert {r.data.tags["run_dir"] for r in runs} == {str(p) for p in job_dirs}
    assert all(r.info.status == "FINISHED" and r.data.tags["alframe.status"] == "finished" for r in runs)
    names = [r.info.run_name for r in runs]
    assert len(set(names)) == 4
    for r in runs:  # unique names that still say strategy, model, dataset and seed
        t = r.data.tags
        assert r.info.run_name.startswith(f"{t['strategy']}-small_cnn-digits-seed{t['seed']}-")
    # parallel jobs share one terminal: every round row says which job it belongs to
    rows = [line for line in stdout.splitlines() if line.startswith("[job ")]
    for num, (strategy, seed) in enumerate([("random", 0), ("random", 1), ("entropy", 0), ("entropy", 1)]):
        mine = [line for line in rows if line.startswith(f"[job {num} {strategy} seed{seed}] ")]
        assert any(line.split("] ", 1)[1].split()[:2] == ["0", "20"] for line in mine), (num, stdout[-3000:])
        assert any(line.split("] ", 1)[1].startswith("Done.") for line in mine)
    # the sweep ends with the link to its budget curves, stored as a view of the experiment
    key = f"alframe-curves-sweep-{sweeps[0].name}"
    assert f"/#/experiments/{exp.experiment_id}/runs?compareRunsMode=CHART&viewStateShareKey={key}" in stdout
    assert f"mlflow.sharedViewState.{key}" in client.get_experiment(exp.experiment_id).tags
    for r in runs:
        assert r.data.tags["dataset"] == "digits" and r.data.tags["model"] == "small_cnn"
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "test_accuracy")]
        assert sorted(steps) == [20, 30]

    out = tmp_path / "report"
    assert report_cli.main(["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--experiment", "sweep_test",
                    "--sweep-id", "latest", "--out", str(out)]) == 0
    rep = rp.build_report(rp.load_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "sweep_test", sweeps[0].name))
    assert list(rep.summary.group) == ["random", "entropy"] and list(rep.summary.n_seeds) == [2, 2]
    assert rep.pairwise is not None
    # each strategy's mean curve is the mean of its two seeds' MLflow values
    for g in ("random", "entropy"):
        vals = [client.get_metric_history(r.info.run_id, "test_accuracy") for r in runs
                if r.data.tags["strategy"] == g]
        at30 = [m.value for h in vals for m in h if m.step == 30]
        got = rep.curves[(rep.curves.group == g) & (rep.curves["labels"] == 30)]["mean"].item()
        assert got == pytest.approx(np.mean(at30))
    assert (out / "budget_curves.png").is_file() and (out / "summary.md").is_file()


def _prepare(uri: str) -> str:
    from alframe.tracking.store import prepare_store

    return prepare_store(uri, "race")[1]


def test_parallel_first_use_of_a_fresh_sqlite_store(tmp_path):  # noqa: F811 (fixture)
    """Without the lock, 4 processes migrating one new SQLite file fail ('table ... already exists')."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    with mp.get_context("fork").Pool(4) as pool:
        ids = pool.map(_prepare, [uri] * 4)
    assert len(set(ids)) == 1
    client = MlflowClient(uri)
    assert [e.name for e in client.search_experiments() if e.name == "race"] == ["race"]


@pytest.mark.filterwarnings("ignore:(?s).*is validated against ConfigStore schema")
@pytest.mark.parametrize("launcher, target", [
    ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
])
def test_launcher_configs_compose(launcher, target):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    assert "prepare_mlflow_store" in cfg.hydra.callbacks
    if launcher == "joblib":
        assert cfg.hydra.launcher.n_jobs == 2
    elif launcher == "submitit_slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 240
    else:
        assert cfg.hydra.launcher.cpus_per_task == 1 and cfg.hydra.launcher.gpus_per_node == 0


def _run(tmp_path, store_path, *overrides):  # noqa: F811 (fixture)
    from alframe.loop.experiment import run_experiment


    cfg = compose_shared([*FAST, "mlflow.experiment_name=target_test", *overrides], tmp_path, store_path)
    return run_experiment(cfg, tmp_path / "job")


def test_target_accuracy_stops_and_logs_labels(tmp_path, store):  # noqa: F811 (fixture)
    # 5 epochs on digits reach well above 15% test accuracy at 20 labels: stop after round 0
    res = _run(tmp_path, store, "loop.target_accuracy=0.15", "loop.rounds=3")
    assert [h["n_labelled"] for h in res.history] == [20]
    assert res.history[0]["test_accuracy"] >= 0.15
    assert res.labels_to_target == 20
    run = MlflowClient(f"sqlite:///{store}").get_run(res.run_id)
    assert run.data.metrics["labels_to_target"] == 20 and run.data.metrics["target_reached"] == 1


def test_target_accuracy_not_reached_runs_all_rounds(tmp_path, store):  # noqa: F811 (fixture)
    res = _run(tmp_path, store, "loop.target_accuracy=1.0", "loop.target_metric=val_accuracy", "loop.rounds=1")
    assert [h["n_labelled"] for h in res.history] == [20, 30]
    assert np.isnan(res.labels_to_target)
    run = MlflowClient(f"sqlite:///{store}").get_run(res.run_id)
    assert run.data.metrics["target_reached"] == 0 and "labels_to_target" not in run.data.metrics


@pytest.mark.parametrize("overrides, message", [
    (["loop.target_accuracy=1.5"], "loop.target_accuracy=1.5 is invalid"),
    (["loop.target_accuracy=0.9", "loop.target_metric=val_loss"], "loop.target_metric='val_loss' is invalid"),
    (["loop.target_accuracy=0.9", "loop.target_metric=val_accuracy", "dataset.val_size=0"],
     "needs a validation split"),
])
def test_target_accuracy_bad_values(tmp_path, store, overrides, message):  # noqa: F811 (fixture)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        _run(tmp_path, store, *overrides)
