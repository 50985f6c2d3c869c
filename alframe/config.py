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


def instantiate_checked(node: DictConfig, what: str, errors: tuple[type[BaseException], ...] = (ValueError, TypeError),
                        **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with constructor errors made readable.

    A :class:`ConfigError` raised inside (e.g. a dataset's missing-files error) comes out as
    itself; one of ``errors`` (default ``ValueError``/``TypeError``) becomes a one-line ConfigError prefixed with ``what``
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
        if isinstance(e.__cause__, errors):
            raise ConfigError(f"{what}: {e.__cause__}") from e
        raise


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _int(cfg: DictConfig, key: str, low: int, high: int, what: str) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}={value!r} is invalid: must be {what}")


def validate_static(cfg: DictConfig) -> None:
    """Check values that do not depend on the data: the ranges of :mod:`alframe.schema`, the
    seed and ``loop.resume``.

    Raises:
        ConfigError: naming the key, the bad value and the allowed range.
    """
    from alframe.schema import check_ranges

    seed = _get(cfg, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} is invalid: must be an integer >= 0")
    check_ranges(cfg)
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
    _int(cfg, "loop.initial_size", 1, n_pool, f"an integer in [1, {n_pool}] (the pool holds {n_pool} samples)")
    if _get(cfg, "loop.initial_balanced"):
        if not has_targets:
            raise ConfigError("loop.initial_balanced=true needs stored labels to balance classes; this "
                              "dataset has none: set loop.initial_balanced=false")
        _int(cfg, "loop.initial_size", num_classes, n_pool,
             f"an integer in [{num_classes}, {n_pool}] with loop.initial_balanced=true "
             f"(at least one per class, {num_classes} classes)")


#: keys added after alframe 0.1 with their defaults: dropped from the fingerprint of a
#: run folder saved by 0.1 so that it still resumes (:func:`config_fingerprints`)
ADDED_KEYS = {"trainer._target_": "pytorch_lightning.Trainer", "trainer.protocol": "epochs",
              "trainer.steps_per_round": None, "trainer.epoch_samples": None, "trainer.restore_best": False,
              "trainer.weight_decay_per_label": None, "trainer.weight_decay_params": [], "loop.stop_kappa": None, "loop.stop_window": 3,
              "loop.stop_set_size": 1000, "loop.machine_label_evidence": True,
              "model.module": {"_target_": "alframe.models.lightning.ALClassifier", "_partial_": True}}


def config_fingerprint(cfg: DictConfig, legacy: bool = False) -> str:
    """Hash of the resolved config minus keys that may change on resume (:data:`RESUMABLE_KEYS`);
    ``legacy=True`` also drops :data:`ADDED_KEYS` where they hold their default."""
    container = OmegaConf.to_container(cfg, resolve=True)
    drop = list(RESUMABLE_KEYS)
    if legacy:
        for key, default in ADDED_KEYS.items():
            value = OmegaConf.select(cfg, key)
            if (OmegaConf.to_container(value) if isinstance(value, DictConfig) else value) == default:
                drop.append(key)
    for key in drop:
        parts = key.split(".")
        node = container
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def config_fingerprints(cfg: DictConfig) -> tuple[str, set[str]]:
    """``(fingerprint to save, fingerprints a saved run may carry)``: this version's, and the
    one alframe 0.1 saved for the same config."""
    current = config_fingerprint(cfg)
    return current, {current, config_fingerprint(cfg, legacy=True)}


def validate_loop_options(cfg: DictConfig, has_val: bool, dataset_name: str) -> None:
    """Check ``loop.target_metric`` against the data (the ranges are in :mod:`alframe.schema`).

    Args:
        has_val: the dataset has a validation split.
        dataset_name: named in the message when ``val_accuracy`` has no split to come from.

    Raises:
        ConfigError: naming the key, the bad value and what is allowed.
    """
    from alframe.metrics import TARGET_METRICS

    loop = cfg.loop
    target, metric = loop.get("target_accuracy"), loop.get("target_metric", "test_accuracy")
    if target is not None:
        if metric not in TARGET_METRICS:
            raise ConfigError(f"loop.target_metric={metric!r} is invalid: must be one of {list(TARGET_METRICS)}")
        if metric == "val_accuracy" and not has_val:
            raise ConfigError("loop.target_metric=val_accuracy needs a validation split, but dataset "
                              f"{dataset_name!r} has none: set dataset.val_size > 0 or use test_accuracy")
