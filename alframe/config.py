"""Checks on configuration values, run before any training starts."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: config keys that may change between an interrupted run and its resumption
RESUMABLE_KEYS = ("loop.resume", "loop.rounds", "loop.budget", "paths", "mlflow", "hydra", "trainer.accelerator",
                  "trainer.devices",
                  # how a person is shown the batch, not what is learnt: may change between sessions
                  "oracle.port", "oracle.open_browser", "oracle.timeout_s", "oracle.preview", "oracle.preview_width")


class ConfigError(ValueError):
    """A configuration value is out of its allowed range; the message names key, value and range."""


def instantiate_checked(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with constructor errors made readable.

    A :class:`ConfigError` raised inside (e.g. a dataset's missing-files error) comes out as
    itself; a ``ValueError``/``TypeError`` becomes a one-line ConfigError prefixed with ``what``
    (e.g. ``"strategy (alframe.strategies.batch.PowerBALD)"``), so the command line shows the
    message without a stack trace. Anything else propagates unchanged.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, ConfigError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(e.__cause__, (ValueError, TypeError)):
            raise ConfigError(f"{what}: {e.__cause__}") from e
        raise


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _int(cfg: DictConfig, key: str, low: int | None = None, high: int | None = None, nullable: bool = False,
         what: str | None = None) -> int | None:
    value = _get(cfg, key)
    allowed = what or (f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]")
    if nullable:
        allowed += " or null"
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{key} is missing: must be {allowed}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} is invalid: must be {allowed}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{key}={value} is invalid: must be {allowed}")
    return value


def validate_static(cfg: DictConfig) -> None:
    """Check values that do not depend on the data.

    Raises:
        ConfigError: naming the key, the bad value and the allowed range.
    """
    _int(cfg, "seed", 0)
    initial = _int(cfg, "loop.initial_size", 1)
    query = _int(cfg, "loop.query_size", 1)
    _int(cfg, "loop.rounds", 0, nullable=True)
    budget = _get(cfg, "loop.budget")
    if budget is not None:
        _int(cfg, "loop.budget", initial, what=f"an integer >= loop.initial_size ({initial})")
    _int(cfg, "loop.pool_subset", query, nullable=True,
         what=f"an integer >= loop.query_size ({query})")
    _int(cfg, "trainer.max_epochs", 1)
    _int(cfg, "model.batch_size", 1)
    patience = _get(cfg, "trainer.early_stopping_patience")
    if patience is not None:
        _int(cfg, "trainer.early_stopping_patience", 1, nullable=True)
    resume = _get(cfg, "loop.resume")
    if not isinstance(resume, (bool, str)):
        raise ConfigError(f"loop.resume={resume!r} is invalid: must be true, false or a run directory path")
    from alframe import protocols  # the training-protocol keys of `trainer`

    protocols.validate(cfg)


def validate_with_data(cfg: DictConfig, n_pool: int, num_classes: int, has_targets: bool) -> None:
    """Check values against the loaded data (pool size, classes).

    Raises:
        ConfigError: naming the key, the bad value and the allowed range.
    """
    _int(cfg, "loop.initial_size", 1, n_pool,
         what=f"an integer in [1, {n_pool}] (the pool holds {n_pool} samples)")
    if _get(cfg, "loop.initial_balanced"):
        if not has_targets:
            raise ConfigError("loop.initial_balanced=true needs stored labels to balance classes; this "
                              "dataset has none: set loop.initial_balanced=false")
        _int(cfg, "loop.initial_size", num_classes, n_pool,
             what=f"an integer in [{num_classes}, {n_pool}] with loop.initial_balanced=true "
                  f"(at least one per class, {num_classes} classes)")


def config_fingerprint(cfg: DictConfig) -> str:
    """Hash of the resolved config minus keys that may change on resume (:data:`RESUMABLE_KEYS`)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in RESUMABLE_KEYS:
        parts = key.split(".")
        node = container
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
