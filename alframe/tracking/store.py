"""The MLflow store: tracking URIs, experiments, retries on a busy SQLite file, the client."""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from alframe.errors import ReportError

T = TypeVar("T")

log = logging.getLogger(__name__)


def default_tracking_uri(output_root: str | Path) -> str:
    """``sqlite:///<abs output_root>/mlflow.db``: a real database file, no server needed."""
    return f"sqlite:///{Path(output_root).resolve() / 'mlflow.db'}"


def tracking_uri_of(cfg) -> str:
    """The MLflow tracking URI a job with ``cfg`` logs to (``mlflow.tracking_uri`` or the
    default SQLite store under ``paths.output_root``)."""
    return cfg.mlflow.tracking_uri or default_tracking_uri(cfg.paths.output_root)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` tracking URI, or None for other stores."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):])
    return None


def prepare_store(tracking_uri: str, experiment_name: str) -> tuple[MlflowClient, str]:
    """A client on ``tracking_uri`` and the id of ``experiment_name``, created if missing.

    On a fresh SQLite file MLflow creates its tables and runs its schema migrations the first
    time a client touches the store; two processes doing that at once corrupt each other's
    migration ("table ... already exists"). For SQLite stores this therefore runs under an
    exclusive file lock next to the database (``<db>.lock``), so parallel sweep jobs
    initialise the store and the experiment one after the other. Other stores (servers,
    ``file:``) are used as they are.

    Returns:
        ``(client, experiment_id)``.

    Raises:
        ValueError: the experiment exists but is deleted.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        client = MlflowClient(tracking_uri=tracking_uri)
        return client, get_or_create_experiment(client, experiment_name)
    db.parent.mkdir(parents=True, exist_ok=True)
    artifact_location = (db.parent / "mlartifacts" / experiment_name).resolve().as_uri()
    with FileLock(str(db) + ".lock"):
        client = MlflowClient(tracking_uri=tracking_uri)
        return client, get_or_create_experiment(client, experiment_name, artifact_location)


def _retry(fn: Callable[[], T], what: str, attempts: int = 8) -> T:
    """Retry ``fn`` on transient store errors (SQLite 'database is locked' under parallel jobs)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - the store raises several types for one cause
            msg = str(e).lower()
            transient = "locked" in msg or "busy" in msg or "unique constraint" in msg
            if not transient or attempt == attempts - 1:
                raise
            wait = 0.2 * (2 ** attempt) * (1 + random.random())
            log.debug("MLflow %s failed (%s); retrying in %.2fs", what, e, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """Experiment id for ``name``, creating it if needed; safe when jobs race to create it."""

    def attempt() -> str:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise ValueError(f"MLflow experiment {name!r} is deleted; restore it or pick another "
                                 "mlflow.experiment_name")
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as e:
            exp = client.get_experiment_by_name(name)  # another job created it first
            if exp is None:
                raise e
            return exp.experiment_id

    return _retry(attempt, "get_or_create_experiment")


def unique_run_name(base: str) -> str:
    """``base`` plus a 6-hex-digit random suffix, e.g. ``entropy-small_cnn-digits-seed0-3f9a1c``."""
    return f"{base}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- reading MLflow
def _client(tracking_uri: str):
    from mlflow import MlflowClient

    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ReportError(f"no MLflow store at {db} (tracking URI {tracking_uri}): run an experiment first, "
                          "or pass --tracking-uri of an existing store")
    return MlflowClient(tracking_uri=tracking_uri)


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def latest_sweep_id(client, experiment_id: str) -> str:
    """The ``sweep_id`` tag of the most recently started run of the experiment that has one.

    Raises:
        ReportError: no run of the experiment carries a sweep id.
    """
    runs = client.search_runs([experiment_id], filter_string="tags.sweep_id != ''",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ReportError("--sweep-id latest: no run of this experiment has a sweep_id tag "
                          "(runs started with `alframe -m ...` have one)")
    return runs[0].data.tags["sweep_id"]
