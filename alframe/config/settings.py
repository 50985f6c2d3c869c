"""The one door: a composed config is checked once here and turned into typed settings.

:func:`settings_of` runs every check that does not need the data (ranges of
:mod:`alframe.config.schema`, the seed, ``loop.resume``, the training protocol, the stopping
rule) and returns :class:`Settings`. The checks that need the data (pool size, classes, a
validation split) run once the data is loaded, through :meth:`Settings.check_with_data`.
Both raise :class:`~alframe.errors.ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from alframe.config.checks import (
    validate_loop_options,
    validate_ssl,
    validate_static,
    validate_stopping,
    validate_with_data,
)
from alframe.config.schema import LoopConfig, MlflowConfig, PathsConfig


@dataclass(frozen=True)
class Settings:
    """A checked config: typed groups for the loop's own keys, config nodes for what Hydra
    instantiates (``_target_`` is the registry).

    Attributes:
        seed: the run's seed (every round's seeds derive from it and the round).
        loop: ``loop`` (:class:`~alframe.config.schema.LoopConfig`).
        mlflow: ``mlflow`` (:class:`~alframe.config.schema.MlflowConfig`).
        paths: ``paths`` (:class:`~alframe.config.schema.PathsConfig`).
        smoke: ``smoke=true`` (a tiny run of the config, marked in MLflow).
        dataset, model, strategy, oracle, trainer, hooks: the config nodes instantiated by the
            rooms that own them.
        raw: the whole composed config (fingerprinted, logged as MLflow params, saved with the
            model).
    """

    seed: int
    loop: LoopConfig
    mlflow: MlflowConfig
    paths: PathsConfig
    smoke: bool
    dataset: DictConfig
    model: DictConfig
    strategy: DictConfig
    oracle: DictConfig
    trainer: DictConfig
    hooks: DictConfig
    raw: DictConfig

    def check_with_data(self, n_pool: int, num_classes: int, has_targets: bool, has_val: bool,
                        dataset_name: str) -> None:
        """The checks that need the loaded data.

        Args:
            n_pool: samples that can be labelled (pool plus labelled set).
            num_classes: classes of the dataset.
            has_targets: the dataset stores labels (a simulation).
            has_val: it has a validation split.
            dataset_name: named in messages.

        Raises:
            ConfigError: naming the key, the bad value and what is allowed.
        """
        validate_with_data(self.raw, n_pool, num_classes, has_targets)
        validate_loop_options(self.raw, has_val, dataset_name)


def _typed(node: DictConfig, schema: type):
    """``node`` as an instance of its schema dataclass (extra keys of a YAML option dropped)."""
    if OmegaConf.get_type(node) is schema:
        return OmegaConf.to_object(node)
    names = schema.__dataclass_fields__
    return schema(**{k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k in names})


def settings_of(cfg: DictConfig) -> Settings:
    """Check ``cfg`` (everything that does not need the data) and return its :class:`Settings`.

    Raises:
        ConfigError: naming the key, the bad value and what is allowed.
    """
    validate_static(cfg)
    validate_stopping(cfg)
    validate_ssl(cfg)
    empty = OmegaConf.create({})
    return Settings(
        seed=int(cfg.seed), loop=_typed(cfg.loop, LoopConfig), mlflow=_typed(cfg.mlflow, MlflowConfig),
        paths=_typed(cfg.paths, PathsConfig), smoke=bool(cfg.get("smoke", False)), dataset=cfg.dataset,
        model=cfg.model, strategy=cfg.strategy, oracle=cfg.oracle, trainer=cfg.trainer,
        hooks=cfg.get("hooks") or empty, raw=cfg)
