"""Pool scoring: class probabilities, MC-dropout samples and embeddings in one pass.

What is computed is what the query strategy declares in ``requires``:

- ``"probs"``: ``[M, C]`` softmax of the deterministic network (dropout off).
- ``"mc_probs"``: ``[M, T, C]`` softmax of T stochastic passes (MC dropout, Gal et al. 2017),
  BatchNorm in eval mode. When the trunk has no dropout, the trunk runs once per sample and
  only the head is sampled T times (exact); otherwise the whole network is sampled, with the
  T passes batched.
- ``"embeddings"``: ``[M, D]`` penultimate features of the deterministic network.
- ``"labelled_embeddings"``: ``[L, D]`` the same for the labelled set (Core-set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from alframe.data.base import IndexedImages, make_loader
from alframe.models.base import ALNet, mc_dropout

KNOWN_REQUIREMENTS = frozenset({"probs", "mc_probs", "embeddings", "labelled_embeddings"})


@dataclass
class ModelOutputs:
    """Model outputs over the candidate pool samples, row-aligned with ``idx``.

    Attributes:
        idx: ``[M] int64`` absolute indices of the scored (candidate) pool samples.
        probs: ``[M, C] float32`` or None.
        mc_probs: ``[M, T, C] float32`` or None.
        embeddings: ``[M, D] float32`` or None.
        labelled_idx: ``[L] int64`` absolute indices of the labelled set, or None.
        labelled_embeddings: ``[L, D] float32`` or None.
    """

    idx: np.ndarray
    probs: torch.Tensor | None = None
    mc_probs: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    labelled_idx: np.ndarray | None = None
    labelled_embeddings: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.idx)

    def require(self, name: str) -> torch.Tensor:
        """The field ``name``; raises ValueError naming it when it was not computed."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"model output {name!r} was not computed: add it to the strategy's `requires`")
        return value


@torch.no_grad()
def compute_outputs(net: ALNet | None, dataset: Dataset, idx: np.ndarray, requires: frozenset[str] | set[str],
                    mc_samples: int = 20, batch_size: int = 512, device: str | torch.device = "cpu",
                    labelled_idx: np.ndarray | None = None) -> ModelOutputs:
    """Score the samples ``dataset[idx]`` with what a strategy needs.

    Args:
        net: trained network (None only when ``requires`` is empty).
        dataset: the train source.
        idx: ``[M] int`` absolute indices to score.
        requires: subset of ``{"probs", "mc_probs", "embeddings", "labelled_embeddings"}``.
        mc_samples: T, number of MC-dropout samples (>= 1) when ``"mc_probs"`` is required.
        batch_size: samples per forward pass.
        device: where to run the network.
        labelled_idx: ``[L] int`` labelled indices, needed for ``"labelled_embeddings"``.

    Returns:
        ModelOutputs with the requested fields filled.

    Raises:
        ValueError: unknown requirement, ``mc_samples < 1``, or a network without dropout
            asked for ``"mc_probs"``.
    """
    requires = frozenset(requires)
    unknown = requires - KNOWN_REQUIREMENTS
    if unknown:
        raise ValueError(f"unknown model outputs {sorted(unknown)}; allowed: {sorted(KNOWN_REQUIREMENTS)}")
    idx = np.asarray(idx, dtype=np.int64)
    out = ModelOutputs(idx=idx)
    if not requires:
        return out
    if net is None:
        raise ValueError(f"outputs {sorted(requires)} need a trained network, got None")
    if "mc_probs" in requires:
        if mc_samples < 1:
            raise ValueError(f"strategy.mc_samples must be >= 1, got {mc_samples}")
        if not net.has_dropout:
            raise ValueError("MC-dropout strategies need a model with dropout layers; "
                             f"{type(net).__name__} has none")
    was_training = net.training
    net.to(device)
    net.eval()
    try:
        fields = _score(net, dataset, idx, requires - {"labelled_embeddings"}, mc_samples, batch_size, device)
        for k, v in fields.items():
            setattr(out, k, v)
        if "labelled_embeddings" in requires:
            if labelled_idx is None:
                raise ValueError("'labelled_embeddings' requires labelled_idx")
            out.labelled_idx = np.asarray(labelled_idx, dtype=np.int64)
            out.labelled_embeddings = _score(net, dataset, out.labelled_idx, {"embeddings"}, 1,
                                             batch_size, device)["embeddings"]
    finally:
        net.train(was_training)
    return out


def _score(net: ALNet, dataset: Dataset, idx: np.ndarray, requires, mc_samples: int, batch_size: int,
           device) -> dict[str, torch.Tensor]:
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in requires}
    head_only = net.trunk_is_deterministic
    loader = make_loader(IndexedImages(dataset, idx), batch_size=batch_size)
    for batch in loader:
        x = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device, non_blocking=True)
        h = net.trunk(x)
        if "probs" in chunks:
            chunks["probs"].append(torch.softmax(net.head(h), dim=-1).float().cpu())
        if "embeddings" in chunks:
            chunks["embeddings"].append(net.embed_features(h).float().cpu())
        if "mc_probs" in chunks:
            with mc_dropout(net):
                if head_only:  # exact: the trunk is deterministic, sample the head only
                    samples = torch.stack([net.head(h) for _ in range(mc_samples)], dim=1)
                else:  # dropout in the trunk: sample the whole network, T passes batched
                    b = x.shape[0]
                    xr = x.unsqueeze(0).expand(mc_samples, *x.shape).reshape(mc_samples * b, *x.shape[1:])
                    samples = net(xr).reshape(mc_samples, b, -1).transpose(0, 1)
            chunks["mc_probs"].append(torch.softmax(samples, dim=-1).float().cpu())
    return {k: (torch.cat(v) if v else torch.empty(0)) for k, v in chunks.items()}


@torch.no_grad()
def evaluate(net: ALNet, dataset: Dataset, batch_size: int = 512, device="cpu") -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``net`` (dropout off) on a labelled dataset.

    Returns:
        ``{"accuracy": float in [0, 1], "loss": float (nats per sample)}``; both NaN for an
        empty dataset (e.g. an unlabelled folder without a test folder: nothing to measure).
    """
    from torchmetrics.functional.classification import multiclass_accuracy

    if len(dataset) == 0:
        return {"accuracy": float("nan"), "loss": float("nan")}
    net.to(device)
    was_training = net.training
    net.eval()
    logits, ys = [], []
    for x, y in make_loader(dataset, batch_size=batch_size):
        logits.append(net(x.to(device)).float().cpu())
        ys.append(torch.as_tensor(y))
    net.train(was_training)
    logits_t, y_t = torch.cat(logits), torch.cat(ys).long()
    acc = multiclass_accuracy(logits_t, y_t, num_classes=logits_t.shape[1], average="micro")
    loss = torch.nn.functional.cross_entropy(logits_t, y_t)
    return {"accuracy": float(acc), "loss": float(loss)}
