"""Evaluation of a round's model on the fixed test (and validation) set."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from alframe.data.base import batches, make_loader
from alframe.models.base import ALNet

if TYPE_CHECKING:  # the multi-device scorer passed in by the loop
    from alframe.scoring.spread import Spread


@torch.no_grad()
def evaluate(net: ALNet, dataset: Dataset, batch_size: int = 512, device="cpu",
             spread: Spread | None = None) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``net`` (dropout off) on a labelled dataset.

    Args:
        spread: shard the dataset over several devices (:class:`Spread`); None: ``device``.

    Returns:
        ``{"accuracy": float in [0, 1], "loss": float (nats per sample)}``; both NaN for an
        empty dataset (e.g. an unlabelled folder without a test folder: nothing to measure).
    """
    return evaluate_many(net, [dataset], batch_size, device, spread)[0]


@torch.no_grad()
def evaluate_many(net: ALNet, datasets: list[Dataset], batch_size: int = 512, device="cpu",
                  spread: Spread | None = None) -> list[dict[str, float]]:
    """:func:`evaluate` of each dataset; with ``spread`` all of them in one sharded pass."""
    from torchmetrics.functional.classification import multiclass_accuracy

    results = [{"accuracy": float("nan"), "loss": float("nan")} for _ in datasets]
    todo = [i for i, ds in enumerate(datasets) if len(ds) > 0]
    if not todo:
        return results
    if spread is not None:
        rows = spread.run(net, [datasets[i] for i in todo], {"logits", "y"}, batch_size=batch_size)
        pairs = [(r["logits"], r["y"]) for r in rows]
    else:
        net.to(device)
        was_training = net.training
        net.eval()
        pairs = []
        for i in todo:
            logits, ys = [], []
            for x, y in batches(make_loader(datasets[i], batch_size=batch_size)):
                logits.append(net(x.to(device)).float().cpu())
                ys.append(torch.as_tensor(y))
            pairs.append((torch.cat(logits), torch.cat(ys).long()))
        net.train(was_training)
    for i, (logits_t, y_t) in zip(todo, pairs, strict=True):
        acc = multiclass_accuracy(logits_t, y_t, num_classes=logits_t.shape[1], average="micro")
        loss = torch.nn.functional.cross_entropy(logits_t, y_t)
        results[i] = {"accuracy": float(acc), "loss": float(loss)}
    return results
