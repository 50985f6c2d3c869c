"""Building one job's parts from its settings, every check before any work: the data, the
query strategy, the oracle, the round hooks, and the run folder with its pool state (new, or a
saved run of the same data and config)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from alframe.config.fingerprint import config_fingerprints
from alframe.config.instantiate import instantiate_checked
from alframe.config.settings import Settings
from alframe.data.base import ALData, load_data
from alframe.errors import ConfigError, StateMismatchError
from alframe.loop.hooks import RoundHook
from alframe.oracles.base import Oracle
from alframe.oracles.stored import StoredOracle
from alframe.rundir.resume import check_same_data
from alframe.rundir.state import PoolState, RunProgress
from alframe.strategies.base import QueryStrategy
from alframe.tracking.run import Tracker, start_run
from alframe.tracking.store import tracking_uri_of
from alframe.training.frozen import check_no_augment, frozen_data
from alframe.training.ssl_cache import ssl_feature_shape, use_ssl_encoder
from alframe.training.trainer import check_training_setup, device_of
from alframe.version import __version__, source_commit


@dataclass
class Parts:
    """What :func:`build_parts` builds. ``resuming``: the state was loaded from ``run_dir``."""

    data: ALData
    strategy: QueryStrategy
    oracle: Oracle
    hooks: list[RoundHook]
    run_dir: Path
    resuming: bool
    state: PoolState


def _instance(node, what: str, kind: type, kind_name: str):
    obj = instantiate_checked(node, f"{what} ({node.get('_target_')})")
    if not isinstance(obj, kind):
        raise ConfigError(f"{what}._target_={node.get('_target_')!r} is not an alframe {kind_name}")
    return obj


def build_parts(s: Settings, run_dir: Path, resuming: bool) -> Parts:
    """Load the data, build the strategy, oracle and hooks, and open the state of ``run_dir``
    (locked by :func:`~alframe.rundir.claim.claim_run_folder`; ``resuming``: it holds a saved run).

    Raises:
        ConfigError: bad values (named with what is allowed).
        StateMismatchError: the saved state belongs to another dataset or configuration.
    """
    if s.trainer.get("threads") is not None:  # results depend on it: logged as the run's `threads` tag
        torch.set_num_threads(int(s.trainer.threads))
    strategy = _instance(s.strategy, "strategy", QueryStrategy, "QueryStrategy")  # before the data: refusals are quick
    if s.loop.consistent_dropout is not None and "mc_probs" in strategy.requires:
        try:  # one mask mode for a comparison
            strategy.consistent_dropout = s.loop.consistent_dropout
        except ValueError as e:  # a strategy that needs one mode (EPIG: consistent masks)
            raise ConfigError(f"loop.consistent_dropout={s.loop.consistent_dropout}: {e}") from None
    if s.loop.initial_by_strategy and not strategy.cold_start:
        raise ConfigError(f"loop.initial_by_strategy=true: strategy={strategy.name} needs a trained model's "
                          "predictions, so it cannot choose the initial set; use a cold-start strategy (random, "
                          "kmeans, typiclust, probcover, or budget_switch starting with one) or "
                          "loop.initial_by_strategy=false")
    data = load_data(s.dataset)
    oracle = _instance(s.oracle, "oracle", Oracle, "Oracle")
    hooks = [_instance(node, f"hooks.{name}", RoundHook, "RoundHook") for name, node in s.hooks.items()]
    fingerprint, accepted = config_fingerprints(s.raw)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resuming:
        state = PoolState.load(run_dir)
        check_same_data(run_dir, state.progress.dataset_fingerprint, data)
        if state.progress.config_fingerprint not in accepted:
            raise StateMismatchError(
                f"saved state in {run_dir} has config_fingerprint={state.progress.config_fingerprint!r}, but this "
                f"run has config_fingerprint={fingerprint!r}: it belongs to another dataset or configuration")
        state.progress.config_fingerprint = fingerprint
    else:
        state = PoolState.create(data.n_train, holdout=data.val_idx, progress=RunProgress(
            dataset_fingerprint=data.fingerprint, config_fingerprint=fingerprint))
    s.check_with_data(state.n_pool + state.n_labelled, data.num_classes, data.targets is not None,
                      len(data.val_idx) > 0, data.name)
    # ssl=...: the pool's self-supervised encoder (trained once per data and settings, cached under
    # ssl.cache_dir) becomes model.backbone, after the fingerprint, before the backbone is built;
    # what trains on its features is checked first, as that step takes minutes
    shape = ssl_feature_shape(s.raw, data)
    if shape is not None:
        check_no_augment(data)
        check_training_setup(s, dataclasses.replace(data, input_shape=shape), strategy, run_dir)
    use_ssl_encoder(s.raw, data)
    data = frozen_data(s.raw, data, run_dir, device_of(s.raw))  # model.backbone: its features, once per run
    if len(data.input_shape) == 1 and not isinstance(oracle, StoredOracle):
        raise ConfigError(f"oracle={s.oracle.get('_target_')} shows samples to a person, but this run's samples "
                          "are feature vectors (dataset=features or model.backbone): use oracle=stored or noisy")
    return Parts(data, strategy, oracle, hooks, run_dir, resuming, state)


def start_tracking(s: Settings, progress: RunProgress, strategy: str, dataset: str, oracle: str, run_dir: Path,
                   sweep_id: str | None) -> tuple[Tracker, bool]:
    """Start (or reopen, on resume) the job's MLflow run, tagged with what a sweep is grouped by.

    Returns:
        ``(tracker, new)``: ``new`` when the run was created now (its id is then in ``progress``).
    """
    uri = progress.tracking_uri or tracking_uri_of(s)  # a resumed run stays in its store
    tags = {"strategy": strategy, "dataset": dataset, "model": s.model.name, "seed": s.seed, "oracle": oracle,
            "run_dir": str(run_dir), "threads": torch.get_num_threads(), "alframe.version": __version__,
            **({"alframe.commit": commit} if (commit := source_commit()) else {}), **({"sweep_id": sweep_id} if sweep_id else {}),
            **({"alframe.smoke": "true"} if s.smoke else {})}
    tracker = start_run(uri, s.mlflow.experiment_name, progress.run_id, s.mlflow.run_name, tags,
                        OmegaConf.to_container(s.raw, resolve=True), run_dir)
    new = progress.run_id is None
    if new:
        progress.run_id, progress.tracking_uri = tracker.run_id, uri
    return tracker, new
