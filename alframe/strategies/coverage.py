"""Coverage-based acquisition for the cold start: ProbCover (Yehuda, Dekel, Hacohen & Weinshall
2022, "Active Learning Through a Covering Lens", NeurIPS).

Every point ``x`` holds a ball ``B(x) = {x' : |x - x'| < delta}`` (open, as the authors' code
``dist < delta``; a point always covers itself). The labelled set covers its balls; each pick is
the candidate whose ball covers the most points not covered yet (greedy max coverage, the
``1 - 1/e`` approximation). The balls form a sparse directed graph, held as CSR arrays (one
``int32`` per edge, no N x N matrix), built from distance blocks of ``chunk_rows^2`` numbers.

``delta`` comes from the paper's purity rule: cluster the embeddings with k-means (k = number
of classes), call a ball pure when all its points share its centre's cluster, and take the
largest ``delta`` whose purity (fraction of pure balls) is at least ``alpha``. A ball of radius
``delta`` around ``x_i`` is pure exactly when ``delta <= r_i``, the distance from ``x_i`` to the
nearest point of another cluster, so purity is the step function
``purity(delta) = mean_i [r_i >= delta]`` and its largest ``delta`` with purity >= alpha is an
order statistic of the ``r_i``: the exact answer that a grid search over candidate radii
approaches as the grid gets finer (:func:`purity_radius`).
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.base import QueryStrategy, check_k, sorted_view
from alframe.strategies.clustering import kmeans
from alframe.strategies.diversity import sq_norms

#: distance blocks hold at most CHUNK_ROWS^2 float32 numbers (16 MiB)
CHUNK_ROWS = 2048
#: the purity rule's delta^2 is lowered by this times the largest squared norm (float32 rounding)
ROUNDING = 1e-5


def _sq_dist(xa: torch.Tensor, xna: torch.Tensor, xb: torch.Tensor, xnb: torch.Tensor) -> torch.Tensor:
    """``[A, B]`` squared Euclidean distances (float32, clamped at 0) from norms and one product."""
    return torch.addmm(xna[:, None] + xnb[None, :], xa, xb.T, alpha=-2.0).clamp_min_(0.0)


def nearest_other_cluster_sq(x: torch.Tensor, labels: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """``[N] float32`` squared distance from each row of ``x`` to the nearest row in another
    cluster (``+inf`` when every row shares its cluster). With the rows sorted by cluster, the
    other clusters of a cluster are two contiguous ranges, measured in ``chunk_rows x
    chunk_rows`` blocks (memory: one block)."""
    order = torch.argsort(labels, stable=True)
    xs = x.index_select(0, order)
    xn = sq_norms(xs)
    n = xs.shape[0]
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    ends = torch.cumsum(counts, 0).tolist()
    best = torch.full((n,), torch.inf, dtype=x.dtype)
    for s, e in zip([0, *ends[:-1]], ends, strict=True):
        for a in range(s, e, chunk_rows):
            rows = slice(a, min(a + chunk_rows, e))
            for lo, hi in ((0, s), (e, n)):
                for b in range(lo, hi, chunk_rows):
                    cols = slice(b, min(b + chunk_rows, hi))
                    d = _sq_dist(xs[rows], xn[rows], xs[cols], xn[cols])
                    torch.minimum(best[rows], d.min(dim=1).values, out=best[rows])
    out = torch.empty_like(best)
    out[order] = best
    return out


def purity_radius(r_sq: np.ndarray, alpha: float, margin: float = 0.0) -> tuple[float, float]:
    """The purity rule: the largest ``delta`` with ``purity(delta) = mean_i [r_i >= delta] >=
    alpha``, and that purity.

    Args:
        r_sq: ``[N]`` squared distance of each point to the nearest point of another cluster.
        alpha: purity threshold in ``(0, 1]``.
        margin: rounding margin in squared distance: ``delta^2`` is lowered by it, so a point of
            another cluster at exactly the boundary stays outside the ball however its distance
            is rounded (purity can only grow as delta shrinks).

    Returns:
        ``(delta, purity)``: ``delta^2`` is the ``(N - ceil(alpha N) + 1)``-th smallest ``r_i^2``
        minus ``margin`` (``inf`` when no point has a neighbour in another cluster).
    """
    r_sq = np.asarray(r_sq, dtype=np.float64)
    n = len(r_sq)
    need = min(n, max(1, math.ceil(alpha * n - 1e-9)))  # balls that must be pure
    d2 = max(float(np.sort(r_sq)[n - need]) - margin, 0.0)
    return math.sqrt(d2), float(np.mean(r_sq >= d2))


def ball_graph(x: torch.Tensor, delta: float, chunk_rows: int = CHUNK_ROWS,
               max_edges: int = 100_000_000) -> tuple[np.ndarray, np.ndarray]:
    """The directed delta-ball graph, ``i -> j`` iff ``|x_i - x_j| < delta`` or ``i = j``.

    Args:
        x: ``[N, D]`` float32 points.
        delta: ball radius (>= 0, finite).
        chunk_rows: distances are computed in strips of rows against all N columns, at most
            ``chunk_rows^2`` numbers each.
        max_edges: most edges to hold.

    Returns:
        CSR ``(indptr [N + 1] int64, indices [E] int32)``: the out-neighbours of row ``i`` are
        ``indices[indptr[i]:indptr[i + 1]]`` (ascending, itself included). Memory O(N + E).

    Raises:
        ValueError: the graph would hold more than ``max_edges`` edges.
    """
    n = x.shape[0]
    xn = sq_norms(x)
    strip = max(1, chunk_rows * chunk_rows // max(n, 1))
    d2 = delta * delta
    indptr = np.zeros(n + 1, dtype=np.int64)
    parts: list[np.ndarray] = []  # the columns of each strip, 4 bytes per edge
    total = 0
    for a in range(0, n, strip):
        rows = torch.arange(a, min(a + strip, n))
        mask = _sq_dist(x[rows], xn[rows], x, xn) < d2
        mask[torch.arange(len(rows)), rows] = True  # a point always covers itself
        flat = np.flatnonzero(mask.numpy())  # row-major: rows ascending, columns ascending within
        total += len(flat)
        if total > max_edges:
            raise ValueError(f"probcover: the delta={delta:.6g} ball graph of {n} points holds more than "
                             f"max_edges={max_edges} edges; lower strategy.alpha or strategy.delta, or "
                             f"raise strategy.max_edges (4 bytes per edge)")
        parts.append((flat % n).astype(np.int32))
        indptr[a + 1:a + 1 + len(rows)] = np.bincount(flat // n, minlength=len(rows))
    np.cumsum(indptr, out=indptr)
    return indptr, (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32))


def greedy_cover(indptr: np.ndarray, indices: np.ndarray, m: int, k: int) -> tuple[list[int], np.ndarray]:
    """Greedy max coverage over rows ``0..m-1`` of a ball graph whose rows ``m..N-1`` (the
    labelled set) are covered from the start.

    Lazy greedy (Minoux 1978): coverage gains only shrink, so a stale gain is an upper bound; a
    row is taken when its gain, recomputed after the last pick, is still the largest (ties: the
    smaller row). The picks are those of plain greedy.

    Args:
        indptr, indices: CSR graph of N rows (:func:`ball_graph`).
        m: candidate rows (the first m).
        k: most picks (stops early once no candidate covers anything new).

    Returns:
        ``(picks, covered)``: rows in pick order (fewer than k when every point is covered) and
        the ``[N] bool`` coverage after them.
    """
    n = len(indptr) - 1
    covered = np.zeros(n, dtype=bool)
    covered[indices[indptr[m]:]] = True  # the labelled set's balls
    covered[m:] = True  # the labelled points themselves
    gain = np.add.reduceat(~covered[indices[:indptr[m]]], indptr[:m], dtype=np.int64) if m else np.zeros(0)
    heap = [(-int(g), r) for r, g in enumerate(gain)]
    heapq.heapify(heap)
    fresh = np.zeros(m, dtype=np.int64)  # pick count at which each row's gain was computed
    picks: list[int] = []
    while heap and len(picks) < k:
        neg, r = heap[0]
        if neg == 0:  # the largest upper bound is 0: nothing left to cover
            break
        nb = indices[indptr[r]:indptr[r + 1]]
        if fresh[r] == len(picks):
            heapq.heappop(heap)
            picks.append(r)
            covered[nb] = True
        else:
            fresh[r] = len(picks)
            heapq.heapreplace(heap, (-int(np.count_nonzero(~covered[nb])), r))
    return picks, covered


class ProbCover(QueryStrategy):
    """ProbCover: greedily pick the candidates whose delta-balls cover the most points that the
    labelled set and the picks so far leave uncovered; once every point is covered, the rest of
    the batch is drawn uniformly at random from the remaining candidates (as in the paper).

    Yehuda, Dekel, Hacohen & Weinshall 2022, "Active Learning Through a Covering Lens"
    (NeurIPS); for the low-budget regime (cold start). ``delta`` by the paper's purity rule
    (see the module docstring): k-means on the candidates and the labelled set, k = number of
    classes (read from ``probs``) or ``n_clusters``; the largest delta with purity >= ``alpha``,
    computed exactly (an order statistic of the distances to the nearest point of another
    cluster) rather than on a grid of radii. The authors embed with a self-supervised model and
    L2-normalise; alframe uses the model's penultimate embeddings (the self-supervised
    features themselves with ``ssl=simclr model=frozen``), L2-normalised when ``normalize``. The chosen delta is recomputed each query (the embeddings change).

    After each :meth:`query`, ``last_info`` holds ``probcover_delta`` (in units of the
    normalised embeddings; left out when infinite: a single cluster), ``probcover_purity``
    (left out for a configured ``delta``), ``probcover_coverage`` (fraction of the candidates
    and labelled points covered after the greedy picks), ``probcover_random`` (picks drawn at
    random because everything was covered) and ``probcover_edges``: floats, for the loop to log.

    Reads ``embeddings: [M, D] float32``, ``labelled_embeddings: [L, D] float32`` (L may be 0)
    and, when ``delta`` and ``n_clusters`` are both unset, ``probs: [M, C]`` (only its width C).
    Time: two passes of ``(M + L)^2 D`` for the purity rule and the graph, in blocks; memory
    O((M + L) D + E) with E the graph's edges (at most ``max_edges``), never (M + L)^2.

    Args:
        name: display name.
        delta: fixed ball radius (> 0), or None for the purity rule.
        alpha: purity threshold of the rule, in (0, 1] (the paper: 0.95).
        n_clusters: k of the purity rule's k-means (>= 2), or None for the number of classes.
        normalize: L2-normalise the embeddings first (the authors' features are normalised).
        max_iter: at most this many Lloyd iterations of the k-means.
        max_edges: most edges of the ball graph (4 bytes each).
        chunk_rows: distance blocks hold at most ``chunk_rows^2`` numbers.

    Raises:
        ValueError: a parameter out of range (at construction); in :meth:`query`, ``k < 1`` or
            a graph larger than ``max_edges``.
    """

    cold_start = True

    def __init__(self, name: str | None = None, delta: float | None = None, alpha: float = 0.95,
                 n_clusters: int | None = None, normalize: bool = True, max_iter: int = 20,
                 max_edges: int = 100_000_000, chunk_rows: int = CHUNK_ROWS):
        super().__init__(name)
        if delta is not None and not (math.isfinite(delta) and delta > 0):
            raise ValueError(f"delta must be a finite number > 0 or null (purity rule), got {delta!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha (purity threshold) must be in (0, 1], got {alpha!r}")
        if n_clusters is not None and int(n_clusters) < 2:
            raise ValueError(f"n_clusters must be >= 2 or null (number of classes), got {n_clusters!r}")
        if int(max_iter) < 1 or int(max_edges) < 1 or int(chunk_rows) < 1:
            raise ValueError(f"need max_iter, max_edges and chunk_rows >= 1, got max_iter={max_iter}, "
                             f"max_edges={max_edges}, chunk_rows={chunk_rows}")
        if not isinstance(normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        self.delta = None if delta is None else float(delta)
        self.alpha, self.normalize = float(alpha), bool(normalize)
        self.n_clusters = None if n_clusters is None else int(n_clusters)
        self.max_iter, self.max_edges, self.chunk_rows = int(max_iter), int(max_edges), int(chunk_rows)
        self.requires = frozenset({"embeddings", "labelled_embeddings"})
        if self.delta is None and self.n_clusters is None:
            self.requires = self.requires | {"probs"}
        self.last_info: dict[str, float] = {}

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = check_k(k)
        self.last_info = {}
        idx, order = sorted_view(outputs)
        m = len(idx)
        k = min(k, m)
        x = outputs.require("embeddings").index_select(0, torch.as_tensor(order)).float()
        lab = outputs.require("labelled_embeddings").float().reshape(-1, x.shape[1])
        feats = torch.cat([x, lab])  # candidates first, then the labelled set
        if self.normalize:
            feats = feats / torch.linalg.vector_norm(feats, dim=1, keepdim=True).clamp_min(1e-12)
        feats = feats - feats.mean(dim=0) if len(feats) else feats  # precision of |x|^2 + |y|^2 - 2 x.y
        delta, purity = self.radius(feats, outputs, rng)
        if math.isfinite(delta):
            indptr, indices = ball_graph(feats, delta, self.chunk_rows, self.max_edges)
            picks, covered = greedy_cover(indptr, indices, m, k)
            edges = float(len(indices))
        else:  # one cluster only: every ball holds every point
            picks = [0] if len(lab) == 0 else []
            covered = np.ones(len(feats), dtype=bool)
            edges = float(len(feats)) ** 2
        n_random = k - len(picks)
        if n_random:
            rest = np.setdiff1d(np.arange(m), picks)
            picks = [*picks, *rng.choice(rest, size=n_random, replace=False).tolist()]
        info = {"probcover_delta": delta, "probcover_purity": purity, "probcover_coverage": float(covered.mean()),
                "probcover_random": float(n_random), "probcover_edges": edges}
        self.last_info = {key: v for key, v in info.items() if math.isfinite(v)}  # loggable numbers only
        return idx[np.asarray(picks, dtype=np.int64)]

    def radius(self, feats: torch.Tensor, outputs: ModelOutputs, rng: np.random.Generator) -> tuple[float, float]:
        """``(delta, purity)``: the configured delta (purity NaN: not measured), or the purity
        rule's on ``feats: [N, D]`` (the candidates and the labelled set; ``(inf, 1)`` when
        fewer than two points)."""
        if self.delta is not None:
            return self.delta, float("nan")
        n_clusters = self.n_clusters or int(outputs.require("probs").shape[1])
        n_clusters = min(n_clusters, len(feats))
        if n_clusters < 2:
            return math.inf, 1.0
        labels = kmeans(feats.numpy(), n_clusters, self.max_iter, rng).labels
        r_sq = nearest_other_cluster_sq(feats, torch.from_numpy(labels), self.chunk_rows)
        # float32 |x|^2 + |y|^2 - 2 x.y is exact to about 1e-6 |x|^2: keep boundary points outside
        margin = ROUNDING * float(sq_norms(feats).max())
        return purity_radius(r_sq.numpy(), self.alpha, margin)

    def __repr__(self) -> str:
        return (f"ProbCover(name={self.name!r}, delta={self.delta}, alpha={self.alpha}, "
                f"n_clusters={self.n_clusters}, normalize={self.normalize})")
