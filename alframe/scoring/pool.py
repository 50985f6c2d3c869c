"""Pool scoring: class probabilities, MC-dropout samples and embeddings in one pass.

What is computed is what the query strategy declares in ``requires``:

- ``"probs"``: ``[M, C]`` softmax of the deterministic network (dropout off).
- ``"mc_probs"``: ``[M, T, C]`` softmax of T stochastic passes (MC dropout, Gal et al. 2017),
  BatchNorm in eval mode. When the trunk has no dropout, the trunk runs once per sample and
  only the head is sampled T times (exact); otherwise the whole network is sampled, with the
  T passes batched.
- ``"embeddings"``: ``[M, D]`` penultimate features of the deterministic network.
- ``"labelled_embeddings"``: ``[L, D]`` the same for the labelled set (Core-set).

With ``trainer.devices=N`` the loop passes a :class:`Spread`: the same outputs, computed in N
spawned processes (Lightning ``predict``) and gathered in pool order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from alframe.data.base import IndexedImages, batches, make_loader
from alframe.models.base import ALNet, mc_dropout
from alframe.scoring.mc import ConsistentMasks, _sample_network, sample_head
from alframe.scoring.outputs import KNOWN_REQUIREMENTS, ModelOutputs

if TYPE_CHECKING:  # the multi-device scorer passed in by the loop
    from alframe.scoring.spread import Spread


@torch.no_grad()
def compute_outputs(net: ALNet | None, dataset: Dataset, idx: np.ndarray, requires: frozenset[str] | set[str],
                    mc_samples: int = 20, batch_size: int = 512, device: str | torch.device = "cpu",
                    labelled_idx: np.ndarray | None = None, mask_seed: int | None = None,
                    spread: Spread | None = None) -> ModelOutputs:
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
        mask_seed: None: every pool point draws its own dropout masks in every MC sample (the
            default of MC dropout). An integer: *consistent* MC dropout, as in BatchBALD's code:
            one mask per MC sample t and dropout layer, shared by all scored points, drawn from
            this seed (:class:`ConsistentMasks`), so ``mc_probs[:, t]`` are the predictions of
            one parameter sample w_t and the result does not depend on batching.
        spread: shard the scoring over several devices (:class:`Spread`, ``trainer.devices=N``)
            and gather the rows here; None: score on ``device``.

    Returns:
        ModelOutputs with the requested fields filled.

    Raises:
        ValueError: unknown requirement, ``mc_samples < 1``, a network without dropout asked
            for ``"mc_probs"``, or consistent masks for a dropout type they do not support.
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
    sharded = spread is not None and len(idx) > 0
    if not sharded:  # sharded: the spawned ranks move their copy to their device
        net.to(device)
    net.eval()
    lab_idx = None  # the labelled set, scored for "labelled_embeddings" only
    if "labelled_embeddings" in requires:
        if labelled_idx is None:
            raise ValueError("'labelled_embeddings' requires labelled_idx")
        lab_idx = np.asarray(labelled_idx, dtype=np.int64)
    pool_requires = requires - {"labelled_embeddings"}
    try:
        if sharded:
            # one sharded pass over the candidates (and the labelled set), gathered here
            sets = [IndexedImages(dataset, idx)] + ([IndexedImages(dataset, lab_idx)] if lab_idx is not None else [])
            seed = int(torch.randint(2**31 - 1 - 64, ()))  # from the caller's seeded generator
            rows = spread.run(net, sets, pool_requires | ({"embeddings"} if len(sets) > 1 else set()),
                              mc_samples, batch_size, mask_seed if "mc_probs" in requires else None, seed)
            for k in pool_requires:
                setattr(out, k, rows[0][k])
            if len(sets) > 1:
                out.labelled_embeddings = rows[1]["embeddings"]
            return out
        masks = ConsistentMasks(net, mask_seed, mc_samples) if mask_seed is not None and "mc_probs" in requires \
            else None
        fields = _score(net, dataset, idx, pool_requires, mc_samples, batch_size, device, masks)
        for k, v in fields.items():
            setattr(out, k, v)
        if lab_idx is not None:
            out.labelled_embeddings = _score(net, dataset, lab_idx, {"embeddings"}, 1,
                                             batch_size, device)["embeddings"]
    finally:
        net.train(was_training)
    return out


def _score(net: ALNet, dataset: Dataset, idx: np.ndarray, requires, mc_samples: int, batch_size: int,
           device, masks: ConsistentMasks | None = None) -> dict[str, torch.Tensor]:
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in requires}
    loader = make_loader(IndexedImages(dataset, idx), batch_size=batch_size)
    for batch in batches(loader):
        x = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device, non_blocking=True)
        for k, v in _score_batch(net, x, requires, mc_samples, masks).items():
            chunks[k].append(v)
    return {k: (torch.cat(v) if v else torch.empty(0)) for k, v in chunks.items()}


def _score_batch(net: ALNet, x: torch.Tensor, requires, mc_samples: int,
                 masks: ConsistentMasks | None = None) -> dict[str, torch.Tensor]:
    """The ``requires`` outputs (plus ``"logits"`` ``[B, C]`` on request) of one batch
    ``x: [B, ...]``, float32 on the CPU."""
    out: dict[str, torch.Tensor] = {}
    h = net.trunk(x)
    if "logits" in requires:
        out["logits"] = net.head(h).float().cpu()
    if "probs" in requires:
        out["probs"] = torch.softmax(net.head(h), dim=-1).float().cpu()
    if "embeddings" in requires:
        out["embeddings"] = net.embed_features(h).float().cpu()
    if "mc_probs" in requires:
        with mc_dropout(net):
            if net.trunk_is_deterministic:  # exact: the trunk is deterministic, sample the head only
                samples = sample_head(net.head, h, mc_samples, masks=masks)
            else:  # dropout in the trunk: sample the whole network, T passes batched
                samples = _sample_network(net, x, mc_samples, masks=masks)
        out["mc_probs"] = torch.softmax(samples, dim=-1).float().cpu()
    return out




























