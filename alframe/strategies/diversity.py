"""Diversity-based acquisition on penultimate-layer embeddings: Core-set (k-center greedy),
k-means, BADGE and TypiClust.

All pairwise-distance work is chunked or factorised: memory stays O(M (D + C)) for M
candidates, never an M x M distance matrix nor BADGE's M x (C * D) gradient matrix.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.base import QueryStrategy, check_k, sorted_view
from alframe.strategies.clustering import kmeans, knn_sq_distances

#: rows per block in chunked distance computations (block memory = rows * cols * 4 bytes)
CHUNK_ROWS = 2048


@contextlib.contextmanager
def single_threaded():
    """Run a greedy loop of small, memory-bound tensor ops on one intra-op thread, restoring the
    previous setting after: each step is too short to repay an OpenMP fork/join, and on a
    shared (oversubscribed) CPU the join waits for a descheduled thread (measured: 4x slower
    k-center steps with 2 threads under load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """``[N]`` squared row norms of ``x: [N, D]`` without an N x D temporary."""
    return torch.linalg.vector_norm(x, dim=1).square_()


def min_sq_distances(x: torch.Tensor, y: torch.Tensor, chunk_rows: int = CHUNK_ROWS,
                     return_argmin: bool = False):
    """Squared Euclidean distance from each row of ``x`` to its nearest row of ``y``.

    Args:
        x: ``[N, D]`` float.
        y: ``[L, D]`` float (L may be 0: every distance is then +inf, every argmin -1).
        return_argmin: also return the nearest row of ``y``.

    Returns:
        ``[N]`` in ``x``'s dtype, >= 0 (and ``[N] int64`` argmin when asked). Memory: one
        ``chunk_rows x chunk_rows`` block.
    """
    out = torch.full((x.shape[0],), torch.inf, dtype=x.dtype)
    arg = torch.full((x.shape[0],), -1, dtype=torch.int64)
    if y.shape[0] and x.shape[0]:
        xn = sq_norms(x)
        yn = sq_norms(y)
        for a in range(0, x.shape[0], chunk_rows):
            xa, xna = x[a:a + chunk_rows], xn[a:a + chunk_rows]
            best, best_arg = out[a:a + chunk_rows], arg[a:a + chunk_rows]
            for b in range(0, y.shape[0], chunk_rows):
                d = torch.addmm(xna[:, None] + yn[None, b:b + chunk_rows], xa, y[b:b + chunk_rows].T, alpha=-2.0)
                v, i = d.min(dim=1)
                closer = v < best
                best[closer] = v[closer]
                best_arg[closer] = i[closer] + b
        out.clamp_min_(0.0)
    return (out, arg) if return_argmin else out


def k_center_greedy(x: torch.Tensor, centres: torch.Tensor, k: int, rng: np.random.Generator,
                    chunk_rows: int = CHUNK_ROWS, prune: bool = True) -> np.ndarray:
    """Greedy k-center: repeatedly take the point farthest from all centres so far.

    Sener & Savarese 2018, "Active Learning for Convolutional Neural Networks: A Core-Set
    Approach", Algorithm 1.

    Each point remembers its nearest centre and each centre an upper bound ``r_c`` on the
    distance of its points. A new centre ``c'`` can only come closer to a point of centre ``c``
    if ``|c' - c| < 2 r_c`` (triangle inequality), so with ``prune`` only those points are
    re-measured: exact, and on clustered embeddings far fewer than N distances per step.

    Args:
        x: ``[N, D]`` float candidate points.
        centres: ``[L, D]`` initial centres (the labelled set); when L = 0 the first point is
            drawn uniformly with ``rng`` (as in the authors' code).
        k: number of points to pick (1 <= k <= N).
        rng: random generator (used only when L = 0).
        chunk_rows: rows per block for the initial N x L distances.
        prune: skip points the triangle inequality rules out (same result, less work).

    Returns:
        ``[k] int64`` row positions in ``x``, in selection order; the first maximum (lowest
        row) wins ties.
    """
    n, n_lab = x.shape[0], centres.shape[0]
    xn = sq_norms(x)
    dist, owner = min_sq_distances(x, centres, chunk_rows, return_argmin=True)
    ctr = torch.empty(n_lab + k, x.shape[1], dtype=x.dtype)  # all centres so far
    ctr[:n_lab] = centres
    ctr_n = torch.empty(n_lab + k, dtype=x.dtype)  # their squared norms
    ctr_n[:n_lab] = sq_norms(centres)
    radius = torch.zeros(n_lab + k, dtype=x.dtype)  # upper bound of member distances (Euclidean)
    if n_lab:
        radius.scatter_reduce_(0, owner, dist.sqrt(), reduce="amax")
    # slack so float32 rounding never prunes a point that could move
    slack = 1e-3 * max(float(x.max()), -float(x.min())) * x.shape[1] ** 0.5 if n else 0.0
    everyone = torch.arange(n)
    chosen = []
    with single_threaded():
        for step in range(k):
            if step == 0 and n_lab == 0:
                j = int(rng.integers(n))
            else:
                j = int(torch.argmax(dist))
            chosen.append(j)
            c, q = x[j], n_lab + step
            ctr[q], ctr_n[q] = c, xn[j]
            rows = everyone
            if prune and q > 0:
                cc = torch.addmv(ctr_n[:q] + xn[j], ctr[:q], c, alpha=-2.0).clamp_min_(0.0).sqrt_()
                near = cc < 2.0 * radius[:q] * (1 + 1e-3) + slack
                candidates = torch.nonzero(near[owner]).squeeze(1)
                if len(candidates) < n // 4:  # else a full pass is cheaper than gathering rows
                    rows = candidates
            if rows is everyone:
                d = torch.addmv(xn + xn[j], x, c, alpha=-2.0).clamp_min_(0.0)
            else:
                d = torch.addmv(xn[rows] + xn[j], x.index_select(0, rows), c, alpha=-2.0).clamp_min_(0.0)
            better = d < dist[rows]
            moved = rows[better]
            dist[moved] = d[better]
            owner[moved] = q
            radius[q] = d[better].max().sqrt() if len(moved) else 0.0
            dist[j] = -torch.inf  # exact: a chosen point never wins again, even among duplicates
    return np.asarray(chosen, dtype=np.int64)


def _centred(x: torch.Tensor, order: np.ndarray, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 copies of ``x[order]`` and ``lab``, shifted by their common mean (in place on the
    copies: one N x D allocation). The |x|^2 + |y|^2 - 2 x.y expansion then loses far less
    precision to cancellation."""
    x = x.index_select(0, torch.as_tensor(order)).float()
    lab = lab.float().reshape(-1, x.shape[1])
    mean = (x.sum(0) + lab.sum(0)) / (x.shape[0] + lab.shape[0])  # distances ignore shifts; rounding does not
    return x.sub_(mean), lab - mean


class CoreSet(QueryStrategy):
    """Core-set selection by greedy k-center on penultimate-layer embeddings: each pick is the
    candidate farthest (Euclidean) from the labelled set and the picks so far.

    Sener & Savarese 2018, "Active Learning for Convolutional Neural Networks: A Core-Set
    Approach" (the greedy 2-approximation; the robust MIP variant is not implemented).

    Reads ``embeddings: [M, D]`` and ``labelled_embeddings: [L, D]``. Time O(L M D) for the
    distances to the labelled set plus, per pick, O(M' D) for the M' <= M candidates that the
    triangle inequality cannot rule out (exact; see :func:`k_center_greedy`). Memory: one
    float32 copy of the embeddings (centred, for accurate distances) plus one
    ``chunk_rows x chunk_rows`` block; never an M x M matrix.

    Args:
        name: display name.
        chunk_rows: rows per distance block.
    """

    requires = frozenset({"embeddings", "labelled_embeddings"})

    def __init__(self, name: str | None = None, chunk_rows: int = CHUNK_ROWS):
        super().__init__(name)
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.chunk_rows = int(chunk_rows)

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = check_k(k)
        idx, order = sorted_view(outputs)
        x, lab = _centred(outputs.require("embeddings"), order, outputs.require("labelled_embeddings"))
        return idx[k_center_greedy(x, lab, min(k, len(idx)), rng, self.chunk_rows)]


class KMeansSampling(QueryStrategy):
    """k-means sampling: cluster the candidates' embeddings into k clusters and query, from
    each cluster, the member nearest its centre (as in Ash et al. 2020's k-means baseline and
    DeepAL+). A cluster left empty (only with fewer distinct points than k) is filled with the
    unused candidate nearest its centre.

    Clustering: exact Lloyd iterations from greedy k-means++ seeds, accelerated with candidate
    lists and a triangle-inequality bound, faiss for the exhaustive searches
    (:func:`alframe.strategies.clustering.kmeans`), float32; 50,000 x 512 embeddings with
    k = 1,000 take seconds, with an inertia within 1% of scikit-learn's KMeans
    (``python -m benchmarks clustering``). Memory O(M D + k^2).

    Reads ``embeddings: [M, D]``.

    Args:
        name: display name.
        n_init: k-means restarts (the lowest inertia wins).
        max_iter: at most this many Lloyd iterations per restart (fewer when converged).

    Raises:
        ValueError: ``n_init`` or ``max_iter`` < 1.
    """

    requires = frozenset({"embeddings"})
    cold_start = True

    def __init__(self, name: str | None = None, n_init: int = 1, max_iter: int = 20):
        super().__init__(name)
        if int(n_init) < 1 or int(max_iter) < 1:
            raise ValueError(f"n_init and max_iter must be >= 1, got n_init={n_init}, max_iter={max_iter}")
        self.n_init, self.max_iter = int(n_init), int(max_iter)

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = check_k(k)
        idx, order = sorted_view(outputs)
        x = outputs.require("embeddings").index_select(0, torch.as_tensor(order)).float().numpy()
        k = min(k, len(idx))
        km = kmeans(x, k, self.max_iter, rng, self.n_init)
        return idx[nearest_members(x, km.labels, km.centres, km.sq_dist)]


def nearest_members(x: np.ndarray, labels: np.ndarray, centres: np.ndarray,
                    sq_dist: np.ndarray | None = None) -> np.ndarray:
    """For each cluster, the row of ``x`` nearest its centre among the cluster's members;
    empty clusters take the nearest row not yet taken.

    Args:
        x: ``[N, D]`` points; labels: ``[N]`` cluster of each point; centres: ``[K, D]``, K <= N.
        sq_dist: ``[N]`` squared distance of each point to its centre when already known
            (:class:`~alframe.strategies.clustering.KMeansResult`), else computed here.

    Returns:
        ``[K] int64`` distinct row positions.
    """
    d = sq_dist
    if d is None:
        d = np.empty(len(x))  # distance to own centre, in row blocks (no N x D temporary)
        for a in range(0, len(x), 4096):
            d[a:a + 4096] = ((x[a:a + 4096] - centres[labels[a:a + 4096]]) ** 2).sum(1)
    pick = np.full(len(centres), -1, dtype=np.int64)
    order = np.lexsort((d, labels))  # by cluster, then distance (then row: stable)
    first = np.ones(len(order), dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    pick[labels[order][first]] = order[first]
    taken = np.zeros(len(x), dtype=bool)
    taken[pick[pick >= 0]] = True
    for c in np.flatnonzero(pick < 0):
        dc = ((x - centres[c]) ** 2).sum(1)
        dc[taken] = np.inf
        pick[c] = int(np.argmin(dc))
        taken[pick[c]] = True
    return pick


class BADGE(QueryStrategy):
    """Batch Active learning by Diverse Gradient Embeddings: k-means++ seeding on the gradient
    of the cross-entropy loss (at the predicted label) w.r.t. the last layer's weights,
    ``g_i = (p_i - e_{yhat_i}) (x) h_i`` (C * D numbers per candidate).

    Ash, Zhang, Krishnamurthy, Langford & Agarwal 2020, "Deep Batch Active Learning by Diverse,
    Uncertain Gradient Lower Bounds" (ICLR).

    The gradient matrix is never formed: ``<g_i, g_j> = <a_i, a_j> <h_i, h_j>`` with
    ``a = p - e_yhat``, so each seeding step costs O(M (C + D)) and memory is O(M (C + D)),
    in float64. As in the authors' code the first centre is the candidate with the largest
    gradient norm (a data point, so a cluster near the origin is not treated as covered);
    each further centre is drawn with probability proportional to its squared distance to the
    nearest centre. Chosen points and exact duplicates of a centre have distance 0 and are
    never drawn; if every remaining candidate coincides with a centre, the rest are drawn
    uniformly.

    Reads ``probs: [M, C]`` and ``embeddings: [M, D]``.
    """

    requires = frozenset({"probs", "embeddings"})

    #: relative tolerance under which a factorised squared distance counts as exactly 0
    ZERO_TOL = 1e-10

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = check_k(k)
        idx, order = sorted_view(outputs)
        rows = torch.as_tensor(order)
        p = outputs.require("probs")[rows].double()
        h = outputs.require("embeddings")[rows].double()
        return idx[badge_seeding(p, h, min(k, len(idx)), rng, self.ZERO_TOL)]


def badge_seeding(p: torch.Tensor, h: torch.Tensor, k: int, rng: np.random.Generator,
                  zero_tol: float = 1e-10) -> np.ndarray:
    """k-means++ seeding on gradient embeddings with factorised distances (see :class:`BADGE`).

    Args:
        p: ``[N, C]`` class probabilities; h: ``[N, D]`` penultimate embeddings; k <= N.

    Returns:
        ``[k] int64`` distinct row positions in selection order.
    """
    n = p.shape[0]
    a = p.clone()
    a[torch.arange(n), p.argmax(dim=1)] -= 1.0  # p - e_yhat
    an, hn = sq_norms(a), sq_norms(h)
    gn = an * hn  # |g_i|^2
    j = int(torch.argmax(gn))  # first centre: largest gradient norm (first maximum on ties)
    chosen = [j]
    taken = torch.zeros(n, dtype=torch.bool)
    taken[j] = True
    dist = torch.full((n,), torch.inf, dtype=torch.float64)
    with single_threaded():
        for _ in range(1, k):
            d = gn + gn[j] - 2.0 * (a @ a[j]) * (h @ h[j])
            d[d <= zero_tol * (gn + gn[j])] = 0.0  # rounding noise of coincident points -> exactly 0
            torch.minimum(dist, d, out=dist)
            w = dist.clone()
            w[taken] = 0.0
            cum = torch.cumsum(w, 0).numpy()
            if cum[-1] > 0:
                j = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
                j = min(j, n - 1)
                while w[j] <= 0:  # guard against the float edge u == cum[-1]
                    j -= 1
            else:  # everything left coincides with a centre
                j = int(rng.choice(np.flatnonzero(~taken.numpy())))
            chosen.append(j)
            taken[j] = True
    return np.asarray(chosen, dtype=np.int64)


class TypiClust(QueryStrategy):
    """TypiClust: cluster the embeddings of the labelled set and the candidates into
    ``L + k`` clusters (at most ``max_clusters``), visit the clusters with the fewest labelled
    points first (larger first among equals, clusters of at most ``min_cluster_size`` points
    last), and from each take its most typical candidate, typicality = 1 / (mean squared
    distance to its ``k_nn`` nearest neighbours in the cluster).

    Hacohen, Dekel & Weinshall 2022, "Active Learning on a Budget: Opposite Strategies Suit
    High and Low Budgets" (ICML), TPC-RP; meant for the initial and low-budget rounds. The
    paper clusters self-supervised features, L2-normalised (the authors' code); alframe uses the
    model's penultimate embeddings (the self-supervised features themselves with ``ssl=simclr
    model=frozen``), L2-normalised when ``normalize``.
    The authors' code clusters with scikit-learn (KMeans up to 50 clusters, MiniBatchKMeans
    above) and measures typicality with faiss; alframe clusters with exact Lloyd iterations from
    greedy k-means++ seeds (:func:`alframe.strategies.clustering.kmeans`, at most ``max_iter``)
    and takes the exact k-NN within each cluster, so 50,000 x 512 embeddings take seconds.

    Reads ``embeddings: [M, D]`` and ``labelled_embeddings: [L, D]`` (L may be 0).

    Args:
        name: display name.
        k_nn: neighbours for typicality (20 in the paper).
        min_cluster_size: clusters with at most this many points are visited last (5).
        max_clusters: cap on the number of clusters (500).
        max_iter: at most this many Lloyd iterations of the clustering (20; fewer when converged).
        normalize: L2-normalise every embedding first (true, as the authors' features).

    Raises:
        ValueError: a parameter out of range; in :meth:`query`, ``k < 1``.
    """

    requires = frozenset({"embeddings", "labelled_embeddings"})
    cold_start = True

    def __init__(self, name: str | None = None, k_nn: int = 20, min_cluster_size: int = 5,
                 max_clusters: int = 500, max_iter: int = 20, normalize: bool = True):
        super().__init__(name)
        if int(k_nn) < 1 or int(min_cluster_size) < 0 or int(max_clusters) < 1 or int(max_iter) < 1:
            raise ValueError(f"need k_nn >= 1, min_cluster_size >= 0, max_clusters >= 1, max_iter >= 1; got "
                             f"k_nn={k_nn}, min_cluster_size={min_cluster_size}, max_clusters={max_clusters}, "
                             f"max_iter={max_iter}")
        self.k_nn, self.min_cluster_size, self.max_clusters = int(k_nn), int(min_cluster_size), int(max_clusters)
        self.max_iter = int(max_iter)
        if not isinstance(normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        self.normalize = bool(normalize)

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = check_k(k)
        idx, order = sorted_view(outputs)
        m = len(idx)
        k = min(k, m)
        x = outputs.require("embeddings")[torch.as_tensor(order)].float().numpy()
        lab = outputs.require("labelled_embeddings").float().numpy().reshape(-1, x.shape[1])
        if self.normalize:  # cosine geometry, as the contrastive loss that made the features
            x, lab = (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12) for a in (x, lab))
        feats = np.concatenate([x, lab])  # candidates first, then the labelled set
        n_clusters = min(len(lab) + k, self.max_clusters, len(feats))
        cl = kmeans(feats, n_clusters, self.max_iter, rng).labels
        size = np.bincount(cl, minlength=n_clusters)
        labelled_count = np.bincount(cl[m:], minlength=n_clusters)
        big = size > self.min_cluster_size
        # fewest labelled first, then largest; small clusters only after all others
        visit = np.lexsort((np.arange(n_clusters), -size, labelled_count, ~big))
        n_big = int(big.sum())
        by_cluster = np.argsort(cl[:m], kind="stable")  # candidates grouped by cluster, rows ascending
        bounds = np.searchsorted(cl[:m][by_cluster], np.arange(n_clusters + 1))
        members = {c: list(by_cluster[bounds[c]:bounds[c + 1]]) for c in visit}
        chosen: list[int] = []
        groups = [visit[:n_big], visit[n_big:]] if n_big else [visit]
        for group in groups:
            group = [c for c in group if members[c]]
            while len(chosen) < k and group:
                for c in list(group):
                    if len(chosen) == k:
                        break
                    j = self._most_typical(x, members[c])
                    chosen.append(j)
                    members[c].remove(j)
                    if not members[c]:
                        group.remove(c)
        return idx[np.asarray(chosen, dtype=np.int64)]

    def _most_typical(self, x: np.ndarray, rows: list[int]) -> int:
        if len(rows) == 1:
            return rows[0]
        nn = min(self.k_nn, len(rows) // 2) if len(rows) >= 4 else 1
        d2 = knn_sq_distances(x[rows], nn)  # squared L2, as the authors' faiss code
        typicality = 1.0 / (d2.astype(np.float64).mean(1) + 1e-5)
        return rows[int(np.argmax(typicality))]
