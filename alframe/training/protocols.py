"""Training protocols of the AL papers, as ``trainer`` config (see ``conf/trainer/``).

Each round trains a fresh model. How long and on what is the *protocol*; the papers differ, and
the difference moves labels-to-accuracy numbers more than the acquisition function does:

- ``epochs`` (default, ``trainer=cpu``/``gpu``): ``trainer.max_epochs`` passes over the labelled
  set, optional early stopping on validation accuracy (``trainer.early_stopping_patience``).
- ``steps`` (``trainer=steps``): a fixed number of gradient steps per round
  (``trainer.steps_per_round``), whatever the labelled-set size (Lightning's ``max_steps``).
- ``batchbald2019`` (``trainer=batchbald2019``): Kirsch, van Amersfoort & Gal 2019. Each epoch
  draws ``trainer.epoch_samples`` (5,056 in their code) indices from the labelled set with
  repetition (:class:`FixedLengthSampler`), at most 30 epochs, early stopping on validation
  accuracy with patience 3, and the best epoch's weights are restored before scoring and
  testing (``trainer.restore_best``: Lightning ``ModelCheckpoint``).
- ``gal2017`` (``trainer=gal2017``): Gal, Islam & Ghahramani 2017: 50 epochs with the L2 term
  of their Keras code, ``l2(c / N)`` on the dense layer's weights with ``c = 3.5`` and ``N`` the
  labelled-set size of the round (``trainer.weight_decay_per_label``,
  ``trainer.weight_decay_params``; see :func:`scaled_weight_decay`).

The loop calls :func:`train_loader`, :func:`callbacks`, :func:`trainer_kwargs`,
:func:`optimizer_factory` and :func:`restore_best`; everything else stays Lightning's.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler

from alframe.errors import ConfigError

if TYPE_CHECKING:  # the checked settings (alframe.config.settings) or a composed config
    from alframe.config.settings import Settings


class FixedLengthSampler(Sampler[int]):
    """``length`` indices per epoch into a dataset of ``n`` samples, with repetition.

    As BatchBALD's ``RandomFixedLengthSampler``: a random permutation of ``0..length-1`` taken
    modulo ``n``, so every sample appears ``floor(length / n)`` or ``ceil(length / n)`` times per
    epoch (repetition without the variance of i.i.d. draws). When ``length < n`` one epoch is a
    shuffled pass over all ``n`` samples, so no labelled sample is left out (their code then keeps
    the unshuffled order).

    Args:
        n: dataset size (>= 1).
        length: indices per epoch (>= 1).
        generator: torch generator for the permutations (seeded: same seed, same order).

    Raises:
        ValueError: ``n`` or ``length`` < 1.
    """

    def __init__(self, n: int, length: int, generator: torch.Generator | None = None):
        if int(n) < 1 or int(length) < 1:
            raise ValueError(f"FixedLengthSampler needs n >= 1 and length >= 1, got n={n}, length={length}")
        self.n, self.length, self.generator = int(n), int(length), generator

    def __iter__(self) -> Iterator[int]:
        if self.length < self.n:
            return iter(torch.randperm(self.n, generator=self.generator).tolist())
        return iter((torch.randperm(self.length, generator=self.generator) % self.n).tolist())

    def __len__(self) -> int:
        return max(self.length, self.n)


def _get(cfg, key: str, default=None):
    """``trainer.<key>`` of a config or of :class:`~alframe.config.settings.Settings` (both hold the
    ``trainer`` node), or ``default``."""
    return OmegaConf.select(cfg.trainer, key.removeprefix("trainer."), default=default)


def uses_validation(cfg: Settings | DictConfig) -> bool:
    """True when a round's training needs the validation split (early stopping or restore_best)."""
    return _get(cfg, "trainer.early_stopping_patience") is not None or bool(_get(cfg, "trainer.restore_best", False))


def train_loader(cfg: Settings | DictConfig, train_ds: Dataset, batch_size: int, seed: int) -> DataLoader | None:
    """The labelled-set loader of the ``batchbald2019`` protocol (``trainer.epoch_samples`` set),
    or None for the default loader (one pass per epoch, near-equal batches)."""
    length = _get(cfg, "trainer.epoch_samples")
    if length is None or len(train_ds) == 0:
        return None
    from alframe.data.base import _collate_batched

    gen = torch.Generator().manual_seed(int(seed))
    return DataLoader(train_ds, batch_size=int(batch_size), sampler=FixedLengthSampler(len(train_ds), length, gen),
                      collate_fn=_collate_batched)


def trainer_kwargs(cfg: Settings | DictConfig) -> dict:
    """Trainer arguments the protocol sets: ``max_steps`` (and no epoch limit) for ``steps``."""
    steps = _get(cfg, "trainer.steps_per_round")
    if steps is None:
        return {}
    return {"max_steps": int(steps), "max_epochs": -1, "min_epochs": None}


def callbacks(cfg: Settings | DictConfig, run_dir: Path, round: int, use_val: bool) -> list[pl.Callback]:
    """``ModelCheckpoint`` keeping the best ``val_accuracy`` epoch's weights when
    ``trainer.restore_best`` (in ``<run_dir>/checkpoints``, removed by :func:`restore_best`).

    Raises:
        ConfigError: ``restore_best`` without a validation split.
    """
    if not _get(cfg, "trainer.restore_best", False):
        return []
    if not use_val:
        raise ConfigError("trainer.restore_best=true needs a validation split to choose the best epoch: set "
                          "dataset.val_size > 0 or trainer.restore_best=false")
    return [pl.callbacks.ModelCheckpoint(dirpath=str(Path(run_dir) / "checkpoints"), filename=f"round{round}-best",
                                         monitor="val_accuracy", mode="max", save_top_k=1, save_weights_only=True,
                                         enable_version_counter=False)]


def restore_best(trainer: pl.Trainer, module: pl.LightningModule) -> int | None:
    """Load the best epoch's weights saved by :func:`callbacks` into ``module`` and delete the file.

    Returns:
        The 0-based epoch whose weights are now in ``module``, or None when no checkpoint was kept.
    """
    ckpt = trainer.checkpoint_callback if trainer.checkpoint_callback is not None else None
    path = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    if not path:
        return None
    saved = torch.load(path, map_location="cpu", weights_only=False)
    module.load_state_dict(saved["state_dict"])
    Path(path).unlink(missing_ok=True)
    return int(saved.get("epoch", -1))


def scaled_weight_decay(c: float, n_labelled: int) -> float:
    """Torch weight decay equal to Keras' ``l2(c / N)`` (Gal et al. 2017's code: ``c = 3.5``).

    Keras adds ``lambda * sum(w^2)`` to the loss, whose gradient is ``2 lambda w``; torch's
    ``weight_decay`` adds ``wd * w`` to the gradient, so ``wd = 2 c / N``.

    Args:
        c: the numerator (``trainer.weight_decay_per_label``), >= 0.
        n_labelled: N, the number of labelled training samples this round (>= 1).
    """
    return 2.0 * float(c) / max(int(n_labelled), 1)


def optimizer_factory(cfg: Settings | DictConfig, base: Callable[..., torch.optim.Optimizer], net: torch.nn.Module,
                      n_labelled: int) -> Callable[..., torch.optim.Optimizer]:
    """The optimiser factory for this round: ``base`` itself, or, with
    ``trainer.weight_decay_per_label`` set, ``base`` over two parameter groups: the parameters
    matching ``trainer.weight_decay_params`` (fnmatch patterns on ``net.named_parameters()``)
    with :func:`scaled_weight_decay`, the rest with the optimiser's own ``weight_decay``.

    Raises:
        ConfigError: no parameter matches the patterns (names the patterns and some names).
    """
    c = _get(cfg, "trainer.weight_decay_per_label")
    if c is None:
        return base
    patterns = [str(p) for p in _get(cfg, "trainer.weight_decay_params")]
    named = list(net.named_parameters())
    scaled = [p for name, p in named if any(fnmatch.fnmatchcase(name, pat) for pat in patterns)]
    if not scaled:
        raise ConfigError(f"trainer.weight_decay_params={patterns} matches no parameter of the model; its "
                          f"parameters are {[name for name, _ in named]}")
    ids = {id(p) for p in scaled}
    rest = [p for _, p in named if id(p) not in ids]
    wd = scaled_weight_decay(c, n_labelled)

    # a partial, not a closure: trainer.strategy=ddp_spawn pickles the module to its processes
    return functools.partial(_grouped_optimizer, base, scaled, rest, wd)


def _grouped_optimizer(base: Callable[..., torch.optim.Optimizer], scaled: list, rest: list, wd: float,
                       _params=None) -> torch.optim.Optimizer:
    """``base`` over ``[scaled parameters with weight decay wd, the rest]`` (``_params`` ignored)."""
    return base([{"params": scaled, "weight_decay": wd}, {"params": rest}])
