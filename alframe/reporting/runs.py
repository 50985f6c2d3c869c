"""Reading the runs of an experiment (or one sweep) back from MLflow as budget curves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from alframe.errors import ReportError
from alframe.tracking.store import _client, _quote, latest_sweep_id

#: tag marking the summary runs written by this module (never read back as data)
REPORT_TAG = "alframe.report"
#: suffix of the MLflow experiment that holds the report runs of an experiment
REPORT_EXPERIMENT_SUFFIX = "-reports"



@dataclass
class RunCurve:
    """The budget curve of one MLflow run.

    Attributes:
        run_id: MLflow run id.
        group: value of the grouping tag (the strategy name by default).
        seed: the run's ``seed`` tag (``"?"`` if missing).
        labels: ``[R] int`` numbers of labels, increasing.
        accuracy: ``[R] float`` the metric at those label counts.
        tags: all non-system tags of the run.
        status: MLflow run status.
        final_metrics: the latest value of every metric of the run (MLflow's ``run.data.metrics``).
    """

    run_id: str
    group: str
    seed: str
    labels: np.ndarray
    accuracy: np.ndarray
    tags: dict = field(default_factory=dict)
    status: str = "FINISHED"
    final_metrics: dict = field(default_factory=dict)


def load_runs(tracking_uri: str, experiment: str, sweep_id: str | None = None,
              tags: Mapping[str, str] | None = None, metric: str = "test_accuracy",
              group_by: str = "strategy", notes: list[str] | None = None,
              finished_only: bool = False) -> list[RunCurve]:
    """Budget curves of the matching runs of ``experiment``.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name.
        sweep_id: keep only runs with this ``sweep_id`` tag (``"latest"``: the newest sweep).
        tags: keep only runs whose tags equal these values.
        metric: per-round metric to read (logged at ``step`` = number of labels).
        group_by: tag that names a curve's group (``strategy``).
        notes: list that receives human-readable notes about skipped runs.
        finished_only: leave out runs that are still running (or waiting for labels).

    Returns:
        One :class:`RunCurve` per run with at least one value of ``metric``; failed/killed runs
        and alframe's own report runs are left out.

    Raises:
        ReportError: the store or experiment does not exist, or no run matches.
    """
    notes = notes if notes is not None else []
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"no MLflow experiment named {experiment!r} in {tracking_uri}; "
                          f"experiments there: {names or 'none'}")
    if sweep_id == "latest":
        sweep_id = latest_sweep_id(client, exp.experiment_id)
        notes.append(f"sweep id: {sweep_id} (latest)")
    filters = []
    if sweep_id:
        filters.append(f"tags.sweep_id = {_quote(sweep_id)}")
    for k, v in (tags or {}).items():
        filters.append(f"tags.`{k}` = {_quote(v)}")
    filter_string = " and ".join(filters)
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token, order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            break
    curves: list[RunCurve] = []
    for run in runs:
        t = run.data.tags
        if t.get(REPORT_TAG) == "true":
            continue
        if run.info.status in ("FAILED", "KILLED") or (finished_only and run.info.status != "FINISHED"):
            notes.append(f"skipped run {run.info.run_id} ({t.get(group_by, '?')}, seed {t.get('seed', '?')}): "
                         f"status {run.info.status}")
            continue
        history = client.get_metric_history(run.info.run_id, metric)
        if not history:
            notes.append(f"skipped run {run.info.run_id}: no {metric!r} values")
            continue
        by_step: dict[int, tuple[int, float]] = {}
        for m in history:  # a resumed run may re-log a step: keep the latest value
            if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                by_step[int(m.step)] = (m.timestamp, float(m.value))
        steps = np.array(sorted(by_step), dtype=np.int64)
        acc = np.array([by_step[s][1] for s in steps], dtype=float)
        group = t.get(group_by) or run.data.params.get(f"{group_by}.name") or "?"
        curves.append(RunCurve(run_id=run.info.run_id, group=group, seed=t.get("seed", "?"), labels=steps,
                               accuracy=acc, tags={k: v for k, v in t.items() if not k.startswith("mlflow.")},
                               status=run.info.status, final_metrics=dict(run.data.metrics)))
    if not curves:
        what = f"experiment {experiment!r}" + (f" with {filter_string}" if filter_string else "")
        raise ReportError(f"no runs with {metric!r} values in {what} ({tracking_uri})")
    return curves
