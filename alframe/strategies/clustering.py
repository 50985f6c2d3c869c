"""k-means and nearest-neighbour search for the clustering strategies (k-means sampling,
TypiClust), with faiss (Johnson, Douze & Jégou 2019, "Billion-scale similarity search with
GPUs"; the faiss-cpu wheel).

faiss runs Lloyd iterations as blocked float32 matrix products on every OpenMP thread
(``OMP_NUM_THREADS``); scikit-learn's KMeans needed 151 s for 50,000 x 512 points and
k = 1,000, faiss a few seconds (``python -m benchmarks strategies``). faiss has no k-means++,
so the centres start from k-means++ seeding (Arthur & Vassilvitskii 2007) on a random subsample
of ``max(3 k, 3072)`` rows, as scikit-learn's MiniBatchKMeans does (``init_size``): robust for
few, well-separated clusters, and cheap for many.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch

#: rows of the k-means++ seeding sample: max(INIT_FACTOR * k, INIT_MIN_ROWS) (as MiniBatchKMeans)
INIT_FACTOR = 3
INIT_MIN_ROWS = 3072


@dataclass
class KMeansResult:
    """A k-means clustering.

    Attributes:
        centres: ``[K, D] float32`` cluster centres.
        labels: ``[N] int64`` cluster of each row (its nearest centre).
        sq_dist: ``[N] float32`` squared Euclidean distance of each row to its centre.
    """

    centres: np.ndarray
    labels: np.ndarray
    sq_dist: np.ndarray

    @property
    def inertia(self) -> float:
        """Sum of squared distances of the rows to their centres (scikit-learn's ``inertia_``)."""
        return float(self.sq_dist.astype(np.float64).sum())


def kmeans_pp_seeds(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre uniformly, each next
    one with probability proportional to its squared distance to the nearest centre so far.

    Args:
        x: ``[N, D] float32`` points, N >= k.
        k: number of centres (>= 1).
        rng: random generator (all randomness).

    Returns:
        ``[k] int64`` distinct row positions (rows coinciding with a centre are never drawn;
        when only such rows are left, the rest are drawn uniformly from the unused rows).
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).double()
    n = xt.shape[0]
    xn = xt.square().sum(1)
    chosen = [int(rng.integers(n))]
    taken = np.zeros(n, dtype=bool)
    taken[chosen[0]] = True
    dist = torch.full((n,), torch.inf, dtype=torch.float64)
    for _ in range(1, k):
        j = chosen[-1]
        d = torch.addmv(xn + xn[j], xt, xt[j], alpha=-2.0).clamp_min_(0.0)
        torch.minimum(dist, d, out=dist)
        w = dist.numpy().copy()
        w[taken] = 0.0
        total = w.sum()
        if total > 0:
            j = int(np.searchsorted(np.cumsum(w), rng.random() * total, side="right"))
            j = min(j, n - 1)
            while w[j] <= 0:  # float edge: u == total
                j -= 1
        else:  # every unused row coincides with a centre
            j = int(rng.choice(np.flatnonzero(~taken)))
        chosen.append(j)
        taken[j] = True
    return np.asarray(chosen, dtype=np.int64)


def kmeans(x: np.ndarray, k: int, n_iter: int, rng: np.random.Generator, n_init: int = 1) -> KMeansResult:
    """Lloyd's k-means with faiss, started from k-means++ seeds on a subsample; the best of
    ``n_init`` runs (lowest inertia).

    Args:
        x: ``[N, D]`` points (converted to float32), N >= k.
        k: clusters (1 <= k <= N).
        n_iter: Lloyd iterations per run (faiss always runs all of them; 20 is plenty for
            embeddings, see the benchmark).
        rng: random generator (subsample, seeds and faiss's seed).
        n_init: independent runs.

    Returns:
        KMeansResult. A centre that ends up with no member (only with fewer distinct rows
        than k) keeps its position; faiss splits large clusters to fill empty ones.

    Raises:
        ValueError: ``k`` outside ``[1, N]``, ``n_iter < 1`` or ``n_init < 1``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points ({n}), got k={k}")
    if n_iter < 1 or n_init < 1:
        raise ValueError(f"k-means needs n_iter >= 1 and n_init >= 1, got n_iter={n_iter}, n_init={n_init}")
    best = None
    for _ in range(n_init):
        m = min(n, max(INIT_FACTOR * k, INIT_MIN_ROWS))
        sub = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        init = x[sub[kmeans_pp_seeds(x[sub], k, rng)]]
        # no subsampling (max_points_per_centroid), no warning for small clusters (min_points_per_centroid)
        km = faiss.Kmeans(d, k, niter=int(n_iter), seed=int(rng.integers(2**31 - 1)), verbose=False,
                          max_points_per_centroid=n, min_points_per_centroid=1)
        km.train(x, init_centroids=init)
        sq, lab = km.index.search(x, 1)
        res = KMeansResult(km.centroids.copy(), lab[:, 0].astype(np.int64), sq[:, 0])
        if best is None or res.inertia < best.inertia:
            best = res
    return best


def knn_sq_distances(x: np.ndarray, k: int) -> np.ndarray:
    """Squared Euclidean distances from each row of ``x`` to its ``k`` nearest other rows
    (exact search, faiss ``IndexFlatL2``; memory O(N k), never N x N).

    Args:
        x: ``[N, D]`` points; k: neighbours, 1 <= k <= N - 1.

    Returns:
        ``[N, k] float32``, ascending per row (a row itself is left out; an exact duplicate of
        a row counts as a neighbour at distance 0).

    Raises:
        ValueError: ``k`` outside ``[1, N - 1]``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not 1 <= k <= len(x) - 1:
        raise ValueError(f"need 1 <= k <= N - 1 = {len(x) - 1} neighbours, got k={k}")
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    dist, nb = index.search(x, k + 1)
    own = nb == np.arange(len(x))[:, None]
    # drop each row itself (normally column 0; among duplicates faiss may list it later)
    keep = ~own
    keep[~own.any(1), -1] = False  # row not found among k + 1 (many duplicates): drop the farthest
    return np.maximum(dist[keep].reshape(len(x), k), 0.0)
