"""Shared fixtures: compose alframe's Hydra config against a temporary output root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import alframe  # noqa: F401  (registers the structured config schemas with Hydra)

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
# `python -m alframe.cli.run` started by a test, from any folder, imports this checkout's alframe
# (not another one installed in the environment, e.g. a git worktree's main checkout)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
CONFIG_DIR = str(REPO / "conf")

#: overrides that make an experiment small enough for the fast suite
FAST = ["trainer.max_epochs=5", "loop.initial_size=20", "loop.query_size=10", "loop.rounds=2"]


def compose(overrides: list[str], out: Path):
    """The composed alframe config with outputs and the MLflow store under ``out``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[
            f"paths.output_root={out}", f"mlflow.tracking_uri=sqlite:///{out}/mlflow.db", *overrides])


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An initialised, empty MLflow SQLite store, made once per session: MLflow creates its
    tables on first use, which takes seconds, so tests copy this file instead."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, mlflow_template) -> Path:
    """``<tmp_path>/mlflow.db`` (the store :func:`compose` points at), copied from the template."""
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return tmp_path / "mlflow.db"


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides)`` -> composed config writing under ``tmp_path``."""
    def _make(*overrides: str):
        return compose(list(overrides), tmp_path)
    return _make


@pytest.fixture
def run(tmp_path, store):
    """``run(*overrides, job="a")`` runs one experiment job and returns its RunResult."""
    from alframe.loop.experiment import run_experiment

    def _run(*overrides: str, job: str = "job"):
        cfg = compose([*FAST, *overrides], tmp_path)
        return run_experiment(cfg, tmp_path / "runs" / job)
    return _run


#: the run :func:`finished_run` holds (also what tests compare a fresh run of the same config against)
SHARED_RUN = [*FAST, "seed=3", "trainer.max_epochs=2", "loop.rounds=2"]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, mlflow_template):
    """One finished default run (entropy on digits, :data:`SHARED_RUN`), made once per test
    process and shared by tests that only read what a run stored. Tests must not write to it."""
    from alframe.loop.experiment import run_experiment

    out = tmp_path_factory.mktemp("shared_run")
    shutil.copy(mlflow_template, out / "mlflow.db")
    return run_experiment(compose(SHARED_RUN, out), out / "runs" / "job")
