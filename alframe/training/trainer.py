"""Training one round's model: the network, the Lightning Trainer, the device, the seeds.

Everything random in round ``r`` (initial weights, training order, dropout masks of training
and of MC scoring, the pool subset, the strategy's own draws) derives from ``(seed, r)``
through :func:`round_seed` and :func:`round_rng`, so a resumed run repeats exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from alframe import faults
from alframe.config.instantiate import instantiate_checked
from alframe.data.base import ALData, LabelledView, make_loader
from alframe.errors import ConfigError
from alframe.models.base import ALNet
from alframe.models.lightning import ALClassifier, quiet_lightning  # noqa: F401 (re-exported)
from alframe.rundir.state import PoolState, atomic_write
from alframe.scoring.spread import spawn_sharing
from alframe.training import protocols
from alframe.training.seeds import round_seed

if TYPE_CHECKING:  # the checked settings (alframe.config.settings) or a composed config
    from alframe.config.settings import Settings

MODEL_FILE = "last_model.pt"
#: keys of the ``trainer`` group that alframe reads itself; the rest go to pytorch_lightning.Trainer
ALFRAME_TRAINER_KEYS = ("early_stopping_patience", "extra", "threads", "protocol", "steps_per_round", "epoch_samples",
                        "restore_best", "weight_decay_per_label", "weight_decay_params")






def build_net(cfg: Settings | DictConfig, num_classes: int, input_shape: tuple[int, ...]) -> ALNet:
    """A fresh network from ``cfg.model.net``.

    Args:
        num_classes: C, size of the output layer.
        input_shape: ``(channels, height, width)`` of one sample.

    Raises:
        ConfigError: the model's own message (e.g. weights unavailable, input too small), or a
            ``_target_`` that does not build an alframe ALNet.
    """
    net = instantiate_checked(cfg.model.net, f"model={cfg.model.get('name')}", num_classes=num_classes,
                              input_shape=tuple(input_shape))
    if not isinstance(net, ALNet):
        raise ConfigError(f"model.net._target_={cfg.model.net._target_!r} must build an alframe ALNet "
                          f"(trunk + head), got {type(net).__name__}")
    return net


def build_module(cfg: Settings | DictConfig, net: ALNet, n_train: int = 1) -> pl.LightningModule:
    """The LightningModule of ``model.module`` (default: :class:`~alframe.models.lightning.ALClassifier`)
    around ``net``, with ``model.optimizer`` (weight decay scaled by the protocol for
    ``n_train`` training samples, :func:`alframe.training.protocols.optimizer_factory`) and ``model.scheduler``.

    Raises:
        ConfigError: a bad optimiser, scheduler or module value, naming the key.
    """
    module_cfg = cfg.model.get("module") or {"_target_": "alframe.models.lightning.ALClassifier", "_partial_": True}
    optimizer = protocols.optimizer_factory(cfg, instantiate_checked(cfg.model.optimizer, "model.optimizer"), net,
                                            n_train)
    scheduler = instantiate_checked(cfg.model.scheduler, "model.scheduler") if cfg.model.get("scheduler") else None
    factory = instantiate_checked(OmegaConf.create(module_cfg), "model.module")
    module = factory(net=net, optimizer=optimizer, scheduler=scheduler)
    if isinstance(module, ALClassifier):
        module.automatic_optimization = needs_automatic_optimization(cfg)
    return module


def needs_automatic_optimization(cfg: Settings | DictConfig) -> bool:
    """True when a Trainer argument works only with Lightning's automatic optimisation
    (``trainer.extra.gradient_clip_val``, ``trainer.extra.accumulate_grad_batches`` > 1);
    :class:`~alframe.models.lightning.ALClassifier` otherwise steps its optimiser itself."""
    extra = cfg.trainer.get("extra") or {}
    return extra.get("gradient_clip_val") is not None or int(extra.get("accumulate_grad_batches") or 1) != 1


def build_trainer(cfg: Settings | DictConfig, run_dir: Path, has_val: bool, round: int = 0) -> pl.Trainer:
    """The round's ``pytorch_lightning.Trainer`` from the ``trainer`` group (``_target_``):
    no logger, progress bar or model summary; early stopping on ``val_accuracy`` when
    ``trainer.early_stopping_patience`` is set and there is a validation split; the training
    protocol (:mod:`alframe.training.protocols`) adds its callbacks and step limits. Checkpoint files
    are written only when the protocol keeps the best epoch.

    Several devices (``trainer.devices=N``): ``trainer.strategy=auto`` becomes ``ddp_spawn``, so
    each ``fit`` spawns its N processes from this one and the loop stays in this process.

    Raises:
        ConfigError: a Trainer argument Lightning refuses, or a strategy that re-launches the
            command per device (``ddp``), naming the value and the alternative.
    """
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    patience = t.get("early_stopping_patience")
    use_val = has_val and protocols.uses_validation(cfg)
    callbacks = [pl.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=int(patience))] \
        if use_val and patience is not None else []
    callbacks += protocols.callbacks(cfg, run_dir, round, use_val)
    keep_best = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    kwargs = {k: v for k, v in t.items() if k not in ALFRAME_TRAINER_KEYS}
    kwargs.setdefault("_target_", "pytorch_lightning.Trainer")
    kwargs.update(protocols.trainer_kwargs(cfg))
    extra = t.get("extra") or {}
    kwargs.update(extra)
    what = "trainer" + (f" (trainer.extra: {', '.join(f'{k}={v!r}' for k, v in extra.items())})" if extra else "")

    def make(**override) -> pl.Trainer:
        return instantiate_checked(OmegaConf.create({**kwargs, **override}), what, errors=(
                                   ValueError, TypeError, MisconfigurationException), logger=False,
                                   enable_checkpointing=keep_best, enable_progress_bar=False,
                                   enable_model_summary=False, num_sanity_val_steps=0,
                                   limit_val_batches=1.0 if use_val else 0, callbacks=callbacks,
                                   default_root_dir=str(run_dir))

    trainer = make()
    if relaunches_command(trainer):
        # Several devices: the loop (oracle, pool state, MLflow run) lives in this process, so
        # each round's fit spawns its DDP processes (ddp_spawn) instead of re-running the command.
        strategy = kwargs.get("strategy", "auto")
        if strategy != "auto":
            raise ConfigError(
                f"trainer.strategy={strategy!r} with trainer.devices={kwargs.get('devices')!r} re-launches the "
                "alframe command once per device, which would run the whole active-learning loop (oracle, "
                "MLflow run) on every device; use trainer.strategy=ddp_spawn (or auto)")
        trainer = make(strategy="ddp_spawn")
    return trainer


def relaunches_command(trainer: pl.Trainer) -> bool:
    """True when ``trainer``'s strategy starts its processes by re-running ``sys.argv``
    (Lightning's ``ddp``, the default ``auto`` choice for several devices outside notebooks),
    False for one device or processes started from inside this one (``ddp_spawn``, ``ddp_fork``)."""
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    return isinstance(launcher, _SubprocessScriptLauncher) and int(trainer.num_devices) > 1


def check_training_setup(cfg: Settings | DictConfig, data: ALData, strategy, run_dir: Path) -> None:
    """Build what training and scoring will build (network, optimiser, scheduler, Trainer), so a
    bad value is a ConfigError before any labelling. (Augmentations are built when the data
    loads; one that fails only on an image shows when training starts.)

    Args:
        strategy: the run's QueryStrategy (MC-dropout strategies need dropout with p > 0).

    Raises:
        ConfigError: naming the key and its value.
    """
    net = build_net(cfg, data.num_classes, data.input_shape)
    if "mc_probs" in strategy.requires and not net.has_dropout:
        raise ConfigError(
            f"strategy={strategy.name} samples MC dropout, but model={cfg.model.get('name')} has no dropout "
            "layer with p > 0 (check model.net's dropout settings): every MC sample would be identical. "
            "Set a dropout probability > 0 or pick a strategy without MC dropout (e.g. entropy)")
    try:
        build_module(cfg, net).configure_optimizers()
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model.optimizer/model.scheduler ({cfg.model.optimizer.get('_target_')}): {e}") from e
    build_trainer(cfg, run_dir, len(data.val_idx) > 0)


def scoring_spread(cfg: Settings | DictConfig, run_dir: Path):
    """The :class:`~alframe.scoring.spread.Spread` that shards pool scoring and test evaluation over
    the Trainer's devices when ``trainer.devices`` gives more than one, else None (one device,
    :func:`device_of`)."""
    from alframe.scoring.spread import Spread

    trainer = build_trainer(cfg, run_dir, has_val=True)  # only read for its world size
    if int(trainer.world_size) == 1:
        return None
    return Spread(accelerator=str(cfg.trainer.accelerator),
                  devices=OmegaConf.to_container(cfg.trainer, resolve=True)["devices"])


def device_of(cfg: Settings | DictConfig) -> torch.device:
    """The torch device for scoring and evaluation, matching ``trainer.accelerator``."""
    acc = str(cfg.trainer.accelerator)
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if acc == "mps" or (acc == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


def fit(cfg: Settings | DictConfig, data: ALData, state: PoolState, round: int, run_dir: Path,
        pseudo: tuple[np.ndarray, np.ndarray] | None = None) -> ALNet:
    """Train a fresh network on the labelled set of ``state`` (labels from the oracle only).

    Args:
        round: the round (seeds initialisation and training order from ``(seed, round)``).
        pseudo: optional ``(idx [P] int, labels [P] int)`` pseudo-labelled pool samples
            (CEAL) added to this round's training set only; never written to ``state``.

    With ``trainer.devices=N`` the Trainer trains in N spawned DDP processes (batch size per
    process ``model.batch_size``, Lightning's DistributedSampler seeded by ``pl.seed_everything``);
    the returned network holds rank 0's trained weights.

    Returns:
        The trained network (CPU or ``trainer.accelerator``'s device), in eval mode.
    """
    seed = round_seed(cfg.seed, round)
    pl.seed_everything(seed, verbose=False)
    net = build_net(cfg, data.num_classes, data.input_shape)
    idx, y = state.labelled_idx, state.labels[state.labelled_idx]
    if pseudo is not None and len(pseudo[0]):
        idx, y = np.concatenate([idx, pseudo[0]]), np.concatenate([y, pseudo[1]])
    module = build_module(cfg, net, len(idx))
    train_ds, bs = LabelledView(data.train, idx, y, data.train_transform), int(cfg.model.batch_size)
    train_loader = protocols.train_loader(cfg, train_ds, bs, seed) or \
        make_loader(train_ds, batch_size=bs, shuffle=True, seed=seed)
    has_val = len(data.val_idx) > 0
    trainer = build_trainer(cfg, run_dir, has_val, round)
    val_loader = make_loader(data.validation_set(), batch_size=int(cfg.loop.eval_batch_size)) \
        if has_val and protocols.uses_validation(cfg) else None
    faults.point("fit")
    try:
        with spawn_sharing(trainer):
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    except SystemExit as e:  # Lightning turns Ctrl-C/SIGTERM into sys.exit(1): keep it an interrupt
        if trainer.interrupted:
            raise KeyboardInterrupt("interrupted during training") from e
        raise
    protocols.restore_best(trainer, module)
    faults.point("fit_done")
    net = module.net
    del trainer, module
    return net




def save_net(net: ALNet, run_dir: Path) -> None:
    """Write ``net``'s weights to ``run_dir/last_model.pt`` atomically."""
    atomic_write(Path(run_dir) / MODEL_FILE, lambda f: torch.save(net.state_dict(), f))


def load_net(cfg: Settings | DictConfig, data: ALData, run_dir: Path) -> ALNet | None:
    """The last saved model of ``run_dir`` (eval mode), or None when none was saved."""
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        return None
    net = build_net(cfg, data.num_classes, data.input_shape)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net
