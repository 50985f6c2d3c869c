"""CEAL pseudo-labels: a hook that adds confident pool predictions to a round's training set."""

from __future__ import annotations

import numpy as np
import torch

from alframe.data.base import ALData
from alframe.models.base import ALNet
from alframe.rundir.state import PoolState
from alframe.scoring.pool import compute_outputs


class PseudoLabeller:
    """Pseudo-labels of Wang et al. 2017, "Cost-Effective Active Learning for Deep Image
    Classification" (CEAL).

    Pool samples whose class probability under the previous round's model is at least
    ``threshold`` join round ``r``'s training set with the predicted class. They are recomputed
    every round, never written to the pool state and never counted in the budget.

    Args:
        threshold: confidence in (0, 1].
        batch_size: samples per forward pass.
        device: where the pool is scored.
    """

    def __init__(self, threshold: float, batch_size: int = 512, device: torch.device | str = "cpu"):
        self.threshold, self.batch_size, self.device = float(threshold), int(batch_size), device

    def __call__(self, data: ALData, state: PoolState, prev: ALNet | None
                 ) -> tuple[tuple[np.ndarray, np.ndarray] | None, dict[str, float]]:
        """Pseudo-labels from ``prev`` (the previous round's model) over the pool of ``state``.

        Returns:
            ``((idx [P] int64, labels [P] int64) or None, metrics)``; metrics hold
            ``pseudo_labels`` (P) and, when the dataset stores true labels,
            ``pseudo_label_accuracy``.
        """
        pool = state.pool_idx
        if prev is None or len(pool) == 0:
            return None, {"pseudo_labels": 0.0}
        probs = compute_outputs(prev, data.train, pool, {"probs"}, batch_size=self.batch_size,
                                device=self.device).probs
        conf, pred = (t.numpy() for t in probs.max(dim=1))
        keep = conf >= self.threshold
        idx, y = pool[keep], pred[keep].astype(np.int64)
        info = {"pseudo_labels": float(len(idx))}
        if data.targets is not None and len(idx):
            info["pseudo_label_accuracy"] = float((np.asarray(data.targets)[idx] == y).mean())
        return (idx, y), info
