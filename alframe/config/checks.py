"""Checks on configuration values, run before any training starts."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alframe.errors import ConfigError

#: protocol names accepted in ``trainer.protocol`` (a label for logs and docs)
PROTOCOLS = ("epochs", "steps", "batchbald2019", "gal2017")
#: self-supervised methods of ``ssl.method``
SSL_METHODS = ("simclr",)



def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def _int(cfg: DictConfig, key: str, low: int, high: int, what: str) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}={value!r} is invalid: must be {what}")


def validate_static(cfg: DictConfig) -> None:
    """Check values that do not depend on the data: keys nothing reads (:mod:`alframe.config.keys`),
    the ranges of :mod:`alframe.config.schema`, the seed and ``loop.resume``.

    Raises:
        ConfigError: naming the key, the bad value and the allowed range.
    """
    from alframe.config.keys import check_keys
    from alframe.config.schema import check_ranges

    check_keys(cfg)

    seed = _get(cfg, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} is invalid: must be an integer >= 0")
    check_ranges(cfg)
    resume = _get(cfg, "loop.resume")
    if not isinstance(resume, (bool, str)):
        raise ConfigError(f"loop.resume={resume!r} is invalid: must be true, false or a run directory path")
    if _get(cfg, "loop.initial_balanced") and _get(cfg, "loop.initial_by_strategy"):
        raise ConfigError("loop.initial_balanced=true and loop.initial_by_strategy=true both choose the initial set: "
                          "set one of them to false")
    validate_protocol(cfg)


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








def validate_loop_options(cfg: DictConfig, has_val: bool, dataset_name: str) -> None:
    """Check ``loop.target_metric`` against the data (the ranges are in :mod:`alframe.config.schema`).

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


def validate_protocol(cfg: DictConfig) -> None:
    """Check the protocol keys of ``trainer`` before any training (after :func:`~alframe.config.schema.check_ranges`, which
    checks their types and ranges).

    Raises:
        ConfigError: naming the key, the bad value and what is allowed.
    """
    protocol = _get(cfg, "trainer.protocol", "epochs")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"trainer.protocol={protocol!r} is invalid: must be one of {list(PROTOCOLS)}")
    if _get(cfg, "trainer.steps_per_round") is not None and _get(cfg, "trainer.epoch_samples") is not None:
        raise ConfigError("trainer.steps_per_round and trainer.epoch_samples are both set: a round is either a "
                          "fixed number of steps or epochs of epoch_samples samples; set one of them to null")
    c = _get(cfg, "trainer.weight_decay_per_label")
    if c is not None and not math.isfinite(c):  # its type and range: check_ranges (schema)
        raise ConfigError(f"trainer.weight_decay_per_label={c!r} is invalid: must be a number >= 0 or null")
    if c is not None and not list(_get(cfg, "trainer.weight_decay_params") or []):
        raise ConfigError("trainer.weight_decay_per_label is set but trainer.weight_decay_params is empty: list "
                          "the parameter names it applies to, e.g. [head.1.weight]")
    if not isinstance(_get(cfg, "trainer.restore_best", False), bool):
        raise ConfigError(f"trainer.restore_best={_get(cfg, 'trainer.restore_best')!r} is invalid: must be "
                          "true or false")


def validate_stopping(cfg: DictConfig) -> None:
    """Check ``loop.stop_kappa``, ``loop.stop_window`` and ``loop.stop_set_size``.

    Raises:
        ConfigError: naming the key, the bad value and what is allowed.
    """
    loop = cfg.loop
    size = loop.get("stop_set_size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"loop.stop_set_size={size!r} is invalid: must be an integer >= 0 "
                          "(pool samples scored each round for stop_kappa; 0 = off)")
    threshold = loop.get("stop_kappa")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 < threshold <= 1.0:
            raise ConfigError(f"loop.stop_kappa={threshold!r} is invalid: must be a kappa in (-1, 1] "
                              "(e.g. 0.99) or null to turn the stopping criterion off")
        if size == 0:
            raise ConfigError("loop.stop_kappa needs a stop set: loop.stop_set_size=0 is invalid with it, "
                              "must be an integer >= 1")
    window = loop.get("stop_window", 3)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"loop.stop_window={window!r} is invalid: must be an integer >= 1 "
                          "(rounds in a row with kappa >= loop.stop_kappa)")


def validate_ssl(cfg: DictConfig, need_backbone: bool = True) -> None:
    """Check ``ssl`` (self-supervised pool features) when it is set; its ranges are in
    :mod:`alframe.config.schema`. The encoder class is built, and lightly imported, before training.

    Args:
        need_backbone: a run uses the encoder as ``model.backbone`` (the frozen-feature mode), so
            its model must have one; ``alframe-ssl`` only trains it.

    Raises:
        ConfigError: naming the key, the bad value and what is allowed.
    """
    ssl = _get(cfg, "ssl")
    if ssl is None:
        return
    method = ssl.get("method")
    if method not in SSL_METHODS:
        raise ConfigError(f"ssl.method={method!r} is invalid: must be one of {list(SSL_METHODS)}")
    encoder = ssl.get("encoder")
    if not isinstance(encoder, str) or not (encoder == "auto" or "." in encoder):
        raise ConfigError(f"ssl.encoder={encoder!r} is invalid: must be auto or the dotted path of an alframe ALNet "
                          "class (e.g. alframe.models.ssl.ConvEncoder)")
    if need_backbone and _get(cfg, "model.backbone") is None:
        raise ConfigError(f"ssl={method} trains the backbone of the frozen-feature mode, but model="
                          f"{_get(cfg, 'model.name')} has no model.backbone: use model=frozen trainer=head")
