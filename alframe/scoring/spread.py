"""Multi-device scoring: ``trainer.devices=N`` shards pool scoring and evaluation over N processes
(Lightning ``predict`` under ``ddp_spawn``), gathered in pool order."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from alframe.data.base import make_loader
from alframe.models.base import ALNet
from alframe.models.lightning import quiet_lightning  # noqa: F401 (quiet in the spawned ranks too)
from alframe.scoring.mc import ConsistentMasks
from alframe.scoring.pool import _score_batch


# ---------------------------------------------------------------------- several devices
@dataclass(frozen=True)
class Spread:
    """Scoring and evaluation sharded over several devices (``trainer.devices=N``, N > 1).

    One ``Trainer.predict`` with Lightning's ``ddp_spawn`` per call: N processes, each scoring its
    share of the samples (Lightning's ``DistributedSampler``, which pads the last shard with
    duplicates), each writing its rows and their positions (:class:`_RankWriter`); this process
    then puts the rows back in dataset order, so the result has exactly the shape and order of
    the single-device path. Consistent MC dropout gives the same numbers as one device;
    per-sample MC dropout draws rank ``r``'s masks from ``seed + r``.

    Attributes:
        accelerator: ``trainer.accelerator``.
        devices: ``trainer.devices`` (N > 1 devices).
    """

    accelerator: str
    devices: object

    def run(self, net: ALNet, datasets: list[Dataset], requires, mc_samples: int = 1, batch_size: int = 512,
            mask_seed: int | None = None, seed: int = 0) -> list[dict[str, torch.Tensor]]:
        """Outputs of ``net`` over every dataset of ``datasets`` (items ``image`` or ``(image, label)``).

        Args:
            requires: output names of :func:`_score_batch` (``probs``, ``mc_probs``,
                ``embeddings``, ``logits``) and ``y`` (the dataset's labels, ``[M] int64``).
            mask_seed: consistent MC-dropout seed (see :func:`compute_outputs`), or None.
            seed: torch seed of per-sample MC dropout (rank r uses ``seed + r``).

        Returns:
            One dict per dataset, ``name -> [M, ...]`` rows in dataset order (M = its length).
        """
        import tempfile

        from alframe.scoring.spread import spawn_sharing

        with tempfile.TemporaryDirectory(prefix="alframe-scores-") as tmp:
            writer = _RankWriter(tmp, len(datasets))
            trainer = pl.Trainer(accelerator=self.accelerator, devices=self.devices, strategy="ddp_spawn",
                                 logger=False, enable_progress_bar=False, enable_model_summary=False,
                                 enable_checkpointing=False, callbacks=[writer], default_root_dir=tmp)
            module = _ScoringModule(net, frozenset(requires), int(mc_samples), mask_seed, int(seed))
            loaders = [make_loader(ds, batch_size=batch_size) for ds in datasets]
            with spawn_sharing(trainer):
                trainer.predict(module, dataloaders=loaders, return_predictions=False)
            return [_gather(tmp, trainer.world_size, d, len(ds)) for d, ds in enumerate(datasets)]


def _gather(folder: str, world_size: int, dataloader: int, n: int) -> dict[str, torch.Tensor]:
    """Rows of every rank's file for ``dataloader``, placed at their dataset positions ``[n, ...]``."""
    out: dict[str, torch.Tensor] = {}
    seen = torch.zeros(n, dtype=torch.bool)
    for rank in range(world_size):
        saved = torch.load(f"{folder}/rank{rank}.pt", weights_only=False)
        for rows, pos in zip(saved["pred"][dataloader], saved["idx"][dataloader], strict=True):
            pos = torch.as_tensor(pos, dtype=torch.long)
            seen[pos] = True
            for k, v in rows.items():
                if k not in out:
                    out[k] = torch.empty((n, *v.shape[1:]), dtype=v.dtype)
                out[k][pos] = v  # a padded duplicate writes the same row again
    if not bool(seen.all()):
        raise RuntimeError(f"sharded scoring lost {int((~seen).sum())} of {n} samples")
    return out


class _RankWriter(pl.callbacks.BasePredictionWriter):
    """Lightning prediction writer: each rank saves its predictions and their dataset
    positions to ``<folder>/rank<r>.pt`` at the end of ``predict``."""

    def __init__(self, folder: str, n_loaders: int):
        super().__init__(write_interval="epoch")
        self.folder, self.n_loaders = folder, n_loaders

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        if self.n_loaders == 1:  # Lightning unnests a single loader's predictions (not its indices)
            predictions = [predictions]
        torch.save({"pred": predictions, "idx": batch_indices}, f"{self.folder}/rank{trainer.global_rank}.pt")


class _ScoringModule(pl.LightningModule):
    """``predict_step`` = :func:`_score_batch` of ``net`` (plus the batch's labels for ``"y"``)."""

    def __init__(self, net: ALNet, requires: frozenset[str], mc_samples: int, mask_seed: int | None, seed: int):
        super().__init__()
        self.net, self.requires, self.mc_samples = net, requires, mc_samples
        self.mask_seed, self.seed, self.masks = mask_seed, seed, None

    def on_predict_start(self) -> None:
        torch.manual_seed(self.seed + self.global_rank)  # per-sample MC-dropout masks of this rank
        if self.mask_seed is not None and "mc_probs" in self.requires:
            self.masks = ConsistentMasks(self.net, self.mask_seed, self.mc_samples)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = _score_batch(self.net, x, self.requires - {"y"}, self.mc_samples, self.masks)
        if "y" in self.requires:
            out["y"] = torch.as_tensor(batch[1]).long().cpu()
        return out


@contextlib.contextmanager
def spawn_sharing(trainer: pl.Trainer):
    """While ``trainer`` spawns processes (``ddp_spawn``; a no-op for one process), hand tensors to them through shared-memory
    files: with torch's default (file descriptors) the spawned ranks failed to unpickle the
    data here ("unable to resize file ... Invalid argument")."""
    if int(trainer.world_size) == 1:
        yield
        return
    before = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        yield
    finally:
        torch.multiprocessing.set_sharing_strategy(before)
