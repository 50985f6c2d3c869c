"""Multirun (sweep) support: prepare the MLflow store once before any job starts.

``conf/config.yaml`` registers :class:`PrepareMlflowStore` under ``hydra.callbacks``, so that
``alframe -m ...`` creates the tracking database, runs MLflow's schema migrations and creates
the experiment in the launching process, before a launcher (sequential, joblib, Slurm) starts
the jobs. Each job still goes through :func:`alframe.tracking.store.prepare_store` (a file lock plus
retries), so jobs started outside Hydra's parent process are safe as well. When all jobs are
done it prints the link to the sweep's budget curves in the MLflow UI.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class PrepareMlflowStore(Callback):
    """Hydra callback: on multirun start, initialise the store and the experiment once.

    Only the sweep's base config is prepared (jobs that override ``mlflow.tracking_uri`` or
    ``mlflow.experiment_name`` prepare theirs under the lock themselves). A store that cannot
    be reached here (e.g. a tracking server visible only from cluster nodes) is reported as a
    warning and left to the jobs.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the store/experiment of ``config`` before the launcher starts any job."""
        try:
            from alframe.tracking.store import prepare_store, tracking_uri_of  # MLflow loads only for sweeps

            uri = tracking_uri_of(config)
            _, exp_id = prepare_store(uri, config.mlflow.experiment_name)
        except Exception as e:  # noqa: BLE001 - never block a sweep; jobs retry on their own
            log.warning("alframe: could not prepare the MLflow store before the sweep (%s); "
                        "each job will prepare it", e)
            return
        log.info("alframe: MLflow experiment %r (id %s) ready in %s", config.mlflow.experiment_name, exp_id, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print the links to this sweep's budget curves (one line per run, and grouped by strategy)."""
        from pathlib import Path

        from alframe.progress import console, set_job_prefix
        from alframe.tracking.ui import budget_curves_link

        set_job_prefix("")  # sequential launchers ran the jobs in this process
        sweep_id = Path(str(config.hydra.sweep.dir)).name
        try:
            from alframe.tracking.store import prepare_store, tracking_uri_of

            uri = tracking_uri_of(config)
            client, exp_id = prepare_store(uri, config.mlflow.experiment_name)
            ui_url = config.mlflow.get("ui_url")
            link = budget_curves_link(client, uri, exp_id, sweep_id, ui_url=ui_url)
            grouped = budget_curves_link(client, uri, exp_id, sweep_id, group_by="strategy", ui_url=ui_url)
        except Exception as e:  # noqa: BLE001 - the jobs' results are stored; only the link is missing
            log.warning("alframe: could not store the MLflow chart view of sweep %s (%s)", sweep_id, e)
            return
        console.print(f"Sweep {sweep_id}: budget curves in the MLflow UI: {link}", soft_wrap=True)
        console.print(f"Grouped by strategy (mean, min-max band over seeds): {grouped}", soft_wrap=True)
