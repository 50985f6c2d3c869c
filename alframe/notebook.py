"""The notebook door: run an experiment and build a report from Python, e.g. in Jupyter.

>>> import alframe
>>> res = alframe.run(["strategy=margin", "loop.rounds=5", "seed=1"])
>>> res.history.plot(x="n_labelled", y="test_accuracy")
>>> report = alframe.report("alframe")                  # every run of the MLflow experiment
>>> report.paired                                        # paired intervals against random

:func:`run` composes ``conf/`` with Hydra's compose API (the overrides are the command line's)
and runs one job exactly as ``alframe`` does: the same checks, the same run folder, the same
MLflow run. Sweeps (``-m``) stay on the command line, where Hydra's launchers run them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from alframe.cli.run import CONFIG_DIR
from alframe.config.settings import settings_of
from alframe.reporting.report import make_report
from alframe.reporting.tables import DEFAULT_TARGETS, Report
from alframe.tracking.run import RunResult
from alframe.tracking.store import default_tracking_uri


@dataclass
class NotebookRun:
    """One job's result for a notebook.

    Attributes:
        result: what the job produced (run folder, MLflow run id, status, AUBC, ...).
        history: one row per evaluated round: ``round``, ``n_labelled``, ``test_accuracy``,
            ``test_loss``, ``train_seconds`` and whatever the round hooks added.
    """

    result: RunResult
    history: pd.DataFrame

    def __getattr__(self, name: str):  # run_dir, run_id, aubc, final_accuracy, status, ...
        if name == "result":
            raise AttributeError(name)
        return getattr(self.result, name)


def compose_config(overrides: Sequence[str] = ()):
    """The composed config of ``alframe <overrides>`` (Hydra's compose API over ``conf/``)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="alframe"):
        return compose(config_name="config", overrides=list(overrides))


def run(overrides: Sequence[str] = (), job_dir: str | Path | None = None) -> NotebookRun:
    """Run one experiment job, as ``alframe <overrides>`` would.

    Args:
        overrides: Hydra overrides, e.g. ``["strategy=bald", "seed=3"]``.
        job_dir: the job's folder (default ``<paths.output_root>/runs/<date>/<time>``, as the
            command line's).

    Returns:
        :class:`NotebookRun` with the per-round history as a DataFrame.

    Raises:
        ConfigError: a bad value, named with what is allowed, before any work.
        StateMismatchError: ``loop.resume`` points at another configuration's run.
    """
    from alframe.loop.experiment import run_experiment

    cfg = compose_config(overrides)
    settings = settings_of(cfg)
    if job_dir is None:
        job_dir = Path(settings.paths.output_root) / "runs" / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")
    result = run_experiment(settings, Path(job_dir))
    return NotebookRun(result, pd.DataFrame(result.history))


def report(experiment: str, sweep_id: str | None = None, tracking_uri: str | None = None,
           out: str | Path | None = None, baseline: str = "random", targets: Sequence[float] = DEFAULT_TARGETS,
           show: bool = False, log_to_mlflow: bool = False) -> Report:
    """Build the budget-curve report of an MLflow experiment (``alframe-report``'s tables).

    Args:
        experiment: the MLflow experiment name.
        sweep_id: one sweep's runs (``"latest"`` for the newest), or None for all runs.
        tracking_uri: default the store of ``make run`` (``sqlite:///outputs/mlflow.db``).
        out: folder for the files (default under ``outputs/reports/``).
        show: also print the tables; log_to_mlflow: also log them as a report run.

    Returns:
        The :class:`~alframe.reporting.tables.Report` (``summary``, ``curves``, ``pairwise``,
        ``paired`` DataFrames).

    Raises:
        ReportError: no such experiment, sweep or runs.
    """
    uri = tracking_uri or default_tracking_uri("outputs")
    rep, _ = make_report(uri, experiment, sweep_id, out=out, targets=targets, baseline=baseline, show=show,
                         log_to_mlflow=log_to_mlflow)
    return rep
