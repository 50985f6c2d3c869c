"""Hybrid uncertainty + diversity acquisition: Cluster-Margin."""

from __future__ import annotations

import numpy as np
import torch

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.base import QueryStrategy, check_k, sorted_view


class ClusterMargin(QueryStrategy):
    """Cluster-Margin: take the ``k_m = margin_factor * k`` candidates with the smallest margin
    (top-1 minus top-2 probability), group them with hierarchical agglomerative clustering
    (average linkage, Euclidean, on penultimate embeddings), then fill the batch round-robin
    over the clusters from the smallest to the largest, one uniformly drawn member per cluster
    per pass.

    Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan, Rostamizadeh & Kumar 2021, "Batch Active
    Learning at Scale" (NeurIPS). The paper clusters the whole pool once before the first round
    with a distance threshold; alframe retrains the model every round, so the ``k_m``
    margin candidates are clustered each round, into ``n_clusters`` clusters (default ``k``) or
    by ``distance_threshold`` when that is set.

    Reads ``probs: [M, C]`` (C >= 2) and ``embeddings: [M, D]``. Memory O(k_m^2) for the
    linkage (scikit-learn / SciPy), independent of the pool size.

    Args:
        name: display name.
        margin_factor: k_m / k (>= 1; the paper uses 10).
        n_clusters: number of HAC clusters; None = k (ignored when ``distance_threshold`` is set).
        distance_threshold: HAC linkage distance above which clusters are not merged (the
            paper's epsilon), or None.

    Raises:
        ValueError: ``margin_factor`` < 1, ``n_clusters`` < 1, or ``distance_threshold`` <= 0.
    """

    requires = frozenset({"probs", "embeddings"})

    def __init__(self, name: str | None = None, margin_factor: float = 10.0, n_clusters: int | None = None,
                 distance_threshold: float | None = None):
        super().__init__(name)
        if not margin_factor >= 1:
            raise ValueError(f"margin_factor (k_m / k) must be >= 1, got {margin_factor!r}")
        if n_clusters is not None and int(n_clusters) < 1:
            raise ValueError(f"n_clusters must be >= 1 or null, got {n_clusters!r}")
        if distance_threshold is not None and not distance_threshold > 0:
            raise ValueError(f"distance_threshold must be > 0 or null, got {distance_threshold!r}")
        self.margin_factor = float(margin_factor)
        self.n_clusters = None if n_clusters is None else int(n_clusters)
        self.distance_threshold = None if distance_threshold is None else float(distance_threshold)

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering

        k = check_k(k)
        idx, order = sorted_view(outputs)
        rows = torch.as_tensor(order)
        probs = outputs.require("probs")[rows].double()
        if probs.shape[1] < 2:
            raise ValueError(f"cluster_margin needs at least 2 classes, got probs of shape {tuple(probs.shape)}")
        m = len(idx)
        k = min(k, m)
        top2 = probs.topk(2, dim=1).values
        margin = (top2[:, 0] - top2[:, 1]).numpy()
        k_m = min(m, max(k, int(np.ceil(self.margin_factor * k))))
        cand = np.lexsort((np.arange(m), margin))[:k_m]  # smallest margins, ties -> smaller index
        emb = outputs.require("embeddings")[rows][torch.as_tensor(cand)].double().numpy()
        if k_m == 1:
            cluster = np.zeros(1, dtype=np.int64)
        elif self.distance_threshold is not None:
            cluster = AgglomerativeClustering(n_clusters=None, distance_threshold=self.distance_threshold,
                                              linkage="average").fit_predict(emb)
        else:
            n_cl = min(self.n_clusters or k, k_m)
            cluster = AgglomerativeClustering(n_clusters=n_cl, linkage="average").fit_predict(emb)
        # clusters from smallest to largest (ties: the one holding the smaller index first)
        ids = np.unique(cluster)
        sizes = np.array([np.sum(cluster == c) for c in ids])
        firsts = np.array([cand[cluster == c].min() for c in ids])
        members = [list(rng.permutation(cand[cluster == c])) for c in ids[np.lexsort((firsts, sizes))]]
        chosen: list[int] = []
        while len(chosen) < k:
            for mem in members:
                if mem and len(chosen) < k:
                    chosen.append(int(mem.pop()))
            members = [mem for mem in members if mem]
        return idx[np.asarray(chosen, dtype=np.int64)]
