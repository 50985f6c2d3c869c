"""LightningModule that trains any :class:`~alframe.models.base.ALNet` as a classifier."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from alframe.models.base import ALNet


def quiet_lightning() -> None:
    """Silence Lightning's info logs and the warnings that do not apply to AL rounds (tiny
    labelled sets, no validation split, CPU runs on a GPU machine)."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*does not have many workers.*", ".*number of training batches.*",
                    ".*GPU available but not used.*", ".*but have no `val_dataloader`.*", ".*LeafSpec.*is deprecated.*"):
        warnings.filterwarnings("ignore", message=message)


# here, not only in the loop: the processes that trainer.devices=N spawns import this module
quiet_lightning()


class ALClassifier(pl.LightningModule):
    """Cross-entropy training of an ALNet with a configurable optimiser.

    Args:
        net: the network (trunk + head).
        optimizer: ``params -> torch.optim.Optimizer`` (a Hydra ``_partial_`` optimiser).
        scheduler: optional ``optimizer -> LRScheduler``.

    Logs ``val_accuracy`` and ``val_loss`` per epoch when a validation loader is given (the
    early-stopping monitor).

    Each step is zero_grad -> forward -> backward -> step, the same arithmetic as Lightning's
    automatic optimisation, written out with Lightning's manual-optimisation API
    (``manual_backward``, the wrapped optimiser: precision and DDP gradient sync are still
    Lightning's). That skips the automatic loop's per-step closure and hook dispatch, about
    0.5 ms per step on a 2-core CPU, which is 10% of a small CNN's step. A scheduler steps once
    per epoch, as ``interval: epoch`` does. Trainer features that need the automatic loop
    (``gradient_clip_val``, ``accumulate_grad_batches``) switch it back on:
    :func:`alframe.training.trainer.build_module` sets :attr:`automatic_optimization` from the config.
    """

    def __init__(self, net: ALNet, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable | None = None):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_acc = MulticlassAccuracy(num_classes=net.num_classes, average="micro")
        self.automatic_optimization = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]``."""
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.automatic_optimization:
            return F.cross_entropy(self.net(x), y)
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.net(x), y)
        self.manual_backward(loss)
        opt.step()
        return loss

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization and self.scheduler_factory is not None:
            self.lr_schedulers().step()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.val_acc.update(logits, y)
        # sync_dist: with several devices each rank sees its share of the validation split
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log("val_accuracy", self.val_acc, on_epoch=True, batch_size=len(y))

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.net.parameters())
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": self.scheduler_factory(opt)}
