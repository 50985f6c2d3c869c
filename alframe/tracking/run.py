"""MLflow run lifecycle and per-round logging (through ``mlflow.MlflowClient``).

Conventions: one MLflow run per experiment job; per-round metrics are logged with
``step = number of labelled samples``, so MLflow's metric charts are budget curves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from alframe.tracking.store import _retry, prepare_store, unique_run_name

log = logging.getLogger(__name__)
MAX_PARAM_LEN = 6000
#: run tag saying where an alframe run stands: running, waiting_for_labels, finished, failed, killed
STATUS_TAG = "alframe.status"














def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested mapping to ``{"a.b.c": "value"}`` with string values (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_LEN]
    return out


class Tracker:
    """One MLflow run of an experiment job.

    A new run's name gets a short random suffix (``entropy-small_cnn-digits-seed0-3f9a1c``) so
    that runs of the same config stay apart in the UI's legend and table; the tag
    :data:`STATUS_TAG` follows the run (``running`` -> ``waiting_for_labels`` / ``finished`` /
    ``failed`` / ``killed``) next to MLflow's own status.

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:///...``, ``file:...`` or a server URL).
        experiment_name: MLflow experiment; created when missing.
        run_id: an existing run to continue (resume), or None to create a new one.
        run_name: display name of a new run (made unique with a suffix).
        tags: tags of a new run (strategy, dataset, model, seed, sweep_id, ...).

    Raises:
        ValueError: ``run_id`` belongs to another experiment, or the experiment is deleted.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, run_id: str | None = None,
                 run_name: str | None = None, tags: Mapping[str, str] | None = None):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self._deferred: list[Metric] = []
        self.client, self.experiment_id = prepare_store(tracking_uri, experiment_name)
        if run_id is not None:
            run = self.client.get_run(run_id)
            if run.info.experiment_id != self.experiment_id:
                raise ValueError(f"MLflow run {run_id} belongs to experiment {run.info.experiment_id}, "
                                 f"not to {experiment_name!r}")
            _retry(lambda: self.client.update_run(run_id, status="RUNNING"), "update_run")
            self.run_id = run_id
            self.set_tags({STATUS_TAG: "running"})
        else:
            tag_list = {k: str(v) for k, v in (tags or {}).items()}
            tag_list.setdefault(STATUS_TAG, "running")
            name = unique_run_name(run_name) if run_name else None
            run = _retry(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=tag_list),
                         "create_run")
            self.run_id = run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (strings), 100 per request (MLflow's batch limit)."""
        items = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            _retry(lambda chunk=items[i:i + 100]: self.client.log_batch(self.run_id, params=chunk), "log_params")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        _retry(lambda: self.client.log_batch(self.run_id, tags=items), "set_tags")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, defer: bool = False) -> None:
        """Log metrics at ``step`` (for per-round metrics: the number of labelled samples).

        ``defer=True`` keeps them until the next non-deferred call (or :meth:`finish`), which
        sends everything in one request: one store round trip instead of two for minor metrics
        such as timings.
        """
        ts = int(time.time() * 1000)
        self._deferred.extend(Metric(k, float(v), ts, int(step or 0)) for k, v in metrics.items() if v is not None)
        if defer or not self._deferred:
            return
        items, self._deferred = self._deferred, []
        _retry(lambda: self.client.log_batch(self.run_id, metrics=items), "log_metrics")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a local file as a run artifact."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Send deferred metrics and mark the run ``FINISHED``, ``FAILED`` or ``KILLED`` (MLflow
        status and the :data:`STATUS_TAG` tag)."""
        self.log_metrics({})
        self.set_tags({STATUS_TAG: status.lower()})
        _retry(lambda: self.client.set_terminated(self.run_id, status=status), "set_terminated")


    def wait_for_labels(self) -> None:
        """Mark the run as waiting for labels: it stays ``RUNNING`` in MLflow until resumed."""
        self.log_metrics({})
        self.set_tags({STATUS_TAG: "waiting_for_labels"})

    def budget_curves_url(self, sweep_id: str | None = None, group_by: str | None = None,
                          ui_url: str | None = None) -> str | None:
        """Link that opens this experiment's (or sweep's) budget curves in the MLflow UI's chart
        view (see :mod:`alframe.tracking.ui`; stores the view as an experiment tag).

        Returns:
            The URL, or None when the view could not be stored (logged as a warning: a missing
            link never fails a finished run).
        """
        from alframe.tracking.ui import budget_curves_link

        try:
            return _retry(lambda: budget_curves_link(self.client, self.tracking_uri, self.experiment_id, sweep_id,
                                                     group_by=group_by, ui_url=ui_url), "set_experiment_tag")
        except Exception as e:  # noqa: BLE001 - the run's results are already stored
            log.warning("alframe: could not store the MLflow chart view (%s)", e)
            return None


# --------------------------------------------------------------------------- run artifacts
@dataclass
class RunResult:
    """What one experiment job produced.

    Attributes:
        run_dir: folder with the pool state, queries.csv, plots and the resolved config.
        run_id: MLflow run id.
        tracking_uri: MLflow tracking URI.
        experiment_name: MLflow experiment name.
        history: one dict per evaluated round (round, n_labelled, test_accuracy, ...).
        status: ``"finished"`` or ``"pending"`` (stopped to wait for labels; resume later).
        final_accuracy: test accuracy of the last evaluated round (NaN if none).
        aubc: area under the budget curve normalised to [0, 1] (NaN if no round evaluated).
        labels_to_target: number of labels at which ``loop.target_metric`` first reached
            ``loop.target_accuracy`` (NaN when not reached or no target is set).
    """

    run_dir: Path
    run_id: str
    tracking_uri: str
    experiment_name: str
    history: list[dict] = field(default_factory=list)
    status: str = "finished"
    final_accuracy: float = float("nan")
    aubc: float = float("nan")
    labels_to_target: float = float("nan")


def close_run(tracker: Tracker, run_dir: Path, experiment_name: str, history: list[dict], state, status: str,
              title: str, label: str, target: tuple[float | None, str]) -> RunResult:
    """Log the end of a job: budget-curve plot and ``queries.csv`` always; when finished also
    the summary metrics, ``labelled_set.npz`` and status FINISHED; when waiting for labels the
    run stays RUNNING, tagged ``alframe.status=waiting_for_labels``.

    Args:
        history: the evaluated rounds (dicts with ``n_labelled``, ``test_accuracy``, ...).
        state: the run's :class:`~alframe.rundir.state.PoolState`.
        status: ``"finished"`` or ``"pending"``.
        title, label: the plot's title and the curve's legend label.
        target: ``(loop.target_accuracy or None, loop.target_metric)``.
    """
    import numpy as np

    from alframe.metrics import aubc, labels_to_target

    tracker.log_metrics({})  # send deferred metrics (timings) also when stopping for labels
    result = RunResult(run_dir=run_dir, run_id=tracker.run_id, tracking_uri=tracker.tracking_uri,
                       experiment_name=experiment_name, history=history, status=status)
    if history:
        result.final_accuracy = float(history[-1]["test_accuracy"])
        result.aubc = aubc([h["n_labelled"] for h in history], [h["test_accuracy"] for h in history])
        plot_budget_curve(history, run_dir / "budget_curve.png", title, label)
        tracker.log_artifact(run_dir / "budget_curve.png")
    tracker.log_artifact(run_dir / "queries.csv")
    if status != "finished":
        tracker.wait_for_labels()
        return result
    summary = {"final_accuracy": result.final_accuracy, "aubc": result.aubc, "final_n_labelled": float(state.n_labelled)}
    if target[0] is not None:
        result.labels_to_target = labels_to_target(history, target[0], target[1])
        summary["target_reached"] = float(not np.isnan(result.labels_to_target))
        if summary["target_reached"]:
            summary["labels_to_target"] = result.labels_to_target
    tracker.log_metrics(summary, step=state.n_labelled)
    save_labelled_set(run_dir / "labelled_set.npz", state)
    tracker.log_artifact(run_dir / "labelled_set.npz")
    tracker.finish("FINISHED")
    return result
def start_run(tracking_uri: str, experiment_name: str, run_id: str | None, run_name: str | None,
              tags: Mapping[str, Any], config: Mapping[str, Any], run_dir: Path) -> Tracker:
    """Continue the MLflow run ``run_id``, or create one with ``tags``, the flattened
    ``config`` as params and ``run_dir/config.yaml`` as an artifact.

    Args:
        config: the resolved config as a plain nested mapping.
        run_dir: the job's run folder (``config.yaml`` is written there).
    """
    tracker = Tracker(tracking_uri, experiment_name, run_id=run_id, run_name=run_name, tags=tags)
    if run_id is None:
        tracker.log_params(flatten(config))
        from omegaconf import OmegaConf

        cfg_path = Path(run_dir) / "config.yaml"
        OmegaConf.save(OmegaConf.create(dict(config)), cfg_path)
        tracker.log_artifact(cfg_path)
    return tracker


def write_queries_csv(path: Path, state, class_names: list[str], files: list[str] | None = None) -> None:
    """``queries.csv``: one row per label received (round, index, label, class_name and, for
    folder datasets, ``file``), ordered by round then index; round 0 is the initial labelled set.
    Names that a spreadsheet would run as a formula are escaped (:mod:`alframe.spreadsheet`).
    A readable copy of the saved state: replaced atomically, not fsynced (the next save rewrites it).

    Args:
        state: the run's :class:`~alframe.rundir.state.PoolState`.
        class_names: ``[C]`` names of the classes.
        files: ``[N]`` image paths relative to the dataset root (folder datasets), or None.
    """
    import csv
    import io

    import numpy as np

    from alframe.rundir.state import atomic_write
    from alframe.spreadsheet import spreadsheet_safe

    idx = state.labelled_idx
    order = np.lexsort((idx, state.labelled_round[idx]))
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["round", "index", "label", "class_name"] + (["file"] if files is not None else []))
    for i in idx[order]:
        y = int(state.labels[i])
        w.writerow([int(state.labelled_round[i]), int(i), y, spreadsheet_safe(class_names[y])]
                   + ([spreadsheet_safe(files[i])] if files is not None else []))
    atomic_write(Path(path), lambda f: f.write(buf.getvalue().encode("utf-8")), durable=False)


def save_labelled_set(path: Path, state) -> None:
    """``labelled_set.npz``: ``idx [L]``, ``labels [L]``, ``round [L]`` of the labelled set."""
    import numpy as np

    idx = state.labelled_idx
    np.savez(path, idx=idx, labels=state.labels[idx], round=state.labelled_round[idx])


def plot_budget_curve(history: list[dict], path: Path, title: str, label: str) -> None:
    """Save one run's budget curve (test accuracy against number of labels) as a PNG, drawn by
    the report's plotter (:func:`alframe.tracking.plots.plot_budget_curves`) as a one-run group."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from alframe.tracking.plots import plot_budget_curves

    curves = pd.DataFrame({"group": label, "labels": [h["n_labelled"] for h in history],
                           "mean": [h["test_accuracy"] for h in history], "std": float("nan"), "n_seeds": 1})
    fig = plot_budget_curves(curves, title=title)
    fig.savefig(path)
    plt.close(fig)


