"""k-means and nearest-neighbour search for the clustering strategies (k-means sampling,
TypiClust), with faiss (Johnson, Douze & Jégou 2019, "Billion-scale similarity search with
GPUs"; the faiss-cpu wheel) for every exhaustive search.

k-means is Lloyd's algorithm, exact, accelerated with candidate lists and a triangle-inequality
bound (the idea of Elkan 2003, "Using the triangle inequality to accelerate k-means", and
Hamerly 2010): an exhaustive faiss search gives each point its ``CANDIDATES`` nearest centres
and a lower bound on the distance to every other centre; later iterations compute distances
only to the candidates (one small matrix product per cluster) and lower the bound by the
largest centre move. A point whose nearest candidate is not within its bound is searched
exhaustively again. The assignments are those of plain Lloyd iterations, at a fraction of the
cost once few points change cluster (one exhaustive pass at 50,000 x 512 points and k = 1,000
is 51 GFLOP), and the iterations stop when none does (``python -m benchmarks clustering``).
The centres start from greedy k-means++ seeding (Arthur & Vassilvitskii
2007) on a random subsample of ``max(3 k, 3072)`` rows, as scikit-learn's MiniBatchKMeans does
(``init_size``): robust for few, well-separated clusters, and cheap for many.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np
import torch
from threadpoolctl import ThreadpoolController

#: rows of the k-means++ seeding sample: max(INIT_FACTOR * k, INIT_MIN_ROWS) (as MiniBatchKMeans)
INIT_FACTOR = 3
INIT_MIN_ROWS = 3072
#: at most this many rows, k-means++ seeding computes all pairwise distances at once (float64, 128 MiB)
DENSE_SEED_ROWS = 4096
#: nearest centres kept per point between exhaustive searches
CANDIDATES = 24


@functools.cache
def _threadpools() -> ThreadpoolController:
    """The process's BLAS / OpenMP thread pools, found once (finding them reads /proc: ms)."""
    return ThreadpoolController()


def one_blas_thread():
    """Context manager: BLAS on one thread, for many small products where threads only add
    synchronisation (and spin against other work on a busy machine)."""
    return _threadpools().limit(limits=1, user_api="blas")


@dataclass
class KMeansResult:
    """A k-means clustering.

    Attributes:
        centres: ``[K, D] float32`` cluster centres.
        labels: ``[N] int64`` cluster of each row (its nearest centre).
        sq_dist: ``[N] float32`` squared Euclidean distance of each row to its centre.
        iterations: Lloyd iterations run (fewer than asked when converged).
    """

    centres: np.ndarray
    labels: np.ndarray
    sq_dist: np.ndarray
    iterations: int = 0

    @property
    def inertia(self) -> float:
        """Sum of squared distances of the rows to their centres (scikit-learn's ``inertia_``)."""
        return float(self.sq_dist.astype(np.float64).sum())


def kmeans_pp_seeds(x: np.ndarray, k: int, rng: np.random.Generator, n_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; greedy variant as in
    scikit-learn's ``kmeans_plusplus``): the first centre uniformly; at each next step
    ``n_trials`` rows are drawn with probability proportional to their squared distance to the
    nearest centre so far, and the one that lowers the sum of those distances most is kept.

    Args:
        x: ``[N, D] float32`` points, N >= k.
        k: number of centres (>= 1).
        rng: random generator (all randomness).
        n_trials: candidates per step; None = ``2 + floor(ln k)`` (scikit-learn's default);
            1 = plain k-means++.

    Returns:
        ``[k] int64`` distinct row positions (rows coinciding with a centre are never drawn;
        when only such rows are left, the rest are drawn uniformly from the unused rows).

    Raises:
        ValueError: ``n_trials`` < 1.
    """
    trials = 2 + int(np.log(k)) if n_trials is None else int(n_trials)
    if trials < 1:
        raise ValueError(f"n_trials must be >= 1 (or None), got {n_trials}")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).double()
    n = xt.shape[0]
    xn = xt.square().sum(1)

    def compute(rows: np.ndarray) -> torch.Tensor:  # [len(rows), N]
        r = torch.as_tensor(rows)
        return torch.addmm(xn[r, None] + xn[None, :], xt[r], xt.T, alpha=-2.0).clamp_min_(0.0)

    table = compute(np.arange(n)) if n <= DENSE_SEED_ROWS else None  # all at once: one product, not k thin ones

    def sq_dist(rows: np.ndarray) -> torch.Tensor:
        return compute(rows) if table is None else table[torch.as_tensor(rows)]

    chosen = [int(rng.integers(n))]
    taken = np.zeros(n, dtype=bool)
    taken[chosen[0]] = True
    dist = sq_dist(np.array(chosen))[0]
    for _ in range(1, k):
        w = dist.numpy().copy()
        w[taken] = 0.0
        total = w.sum()
        if total > 0:
            cum = np.cumsum(w)
            cands = np.minimum(np.searchsorted(cum, rng.random(trials) * total, side="right"), n - 1)
            for t, j in enumerate(cands):
                while w[j] <= 0:  # float edge: u == total
                    j -= 1
                cands[t] = j
            cands = np.unique(cands)
            pot = torch.minimum(dist[None, :], sq_dist(cands))
            best = int(torch.argmin(pot.sum(1)))
            j, dist = int(cands[best]), pot[best]
        else:  # every unused row coincides with a centre
            j = int(rng.choice(np.flatnonzero(~taken)))
            dist = torch.minimum(dist, sq_dist(np.array([j]))[0])
        chosen.append(j)
        taken[j] = True
    return np.asarray(chosen, dtype=np.int64)


def kmeans(x: np.ndarray, k: int, n_iter: int, rng: np.random.Generator, n_init: int = 1) -> KMeansResult:
    """Lloyd's k-means started from k-means++ seeds on a subsample; the best of ``n_init`` runs
    (lowest inertia). Each run is :func:`lloyd`: exact Lloyd iterations, stopped early when no
    point changes cluster.

    Args:
        x: ``[N, D]`` points (converted to float32), N >= k.
        k: clusters (1 <= k <= N).
        n_iter: at most this many Lloyd iterations (centre update + reassignment) per run.
        rng: random generator (subsample and seeds).
        n_init: independent runs.

    Returns:
        KMeansResult of the best run.

    Raises:
        ValueError: ``k`` outside ``[1, N]``, ``n_iter < 1`` or ``n_init < 1``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points ({n}), got k={k}")
    if n_iter < 1 or n_init < 1:
        raise ValueError(f"k-means needs n_iter >= 1 and n_init >= 1, got n_iter={n_iter}, n_init={n_init}")
    best = None
    for _ in range(n_init):
        m = min(n, max(INIT_FACTOR * k, INIT_MIN_ROWS))
        sub = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        res = lloyd(x, x[sub[kmeans_pp_seeds(x[sub], k, rng)]], n_iter)
        if best is None or res.inertia < best.inertia:
            best = res
    return best


def _nearest(x: np.ndarray, centres: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive faiss search: ``(cand [n, m] int64 nearest centres, ascending; bound [n]
    float64 distance (not squared) to the (m+1)-th nearest centre, inf when there is none)``."""
    index = faiss.IndexFlatL2(centres.shape[1])
    index.add(centres)
    extra = int(m < len(centres))
    sq, cand = index.search(x, m + extra)
    bound = np.sqrt(np.maximum(sq[:, m].astype(np.float64), 0.0)) if extra else np.full(len(x), np.inf)
    return cand[:, :m].copy(), bound


def _reassign(clusters: np.ndarray, *, xs, start, order, pool, c, cn, new_a, near) -> None:
    """Nearest candidate centre of every member of ``clusters`` (one small product per cluster,
    numpy frees the GIL in it): writes ``new_a`` and the squared distance minus ``|x|^2`` to
    ``near``, at the points' original rows."""
    for j in clusters:
        s, e = start[j], start[j + 1]
        cols = np.flatnonzero(pool[j])
        sq = cn[cols] - 2.0 * (xs[s:e] @ c[cols].T)
        pick = sq.argmin(1)
        new_a[order[s:e]] = cols[pick]
        near[order[s:e]] = sq[np.arange(e - s), pick]


def lloyd(x: np.ndarray, init: np.ndarray, n_iter: int, candidates: int = CANDIDATES) -> KMeansResult:
    """Exact Lloyd iterations from given centres, computing distances only where a point's
    cluster can change (see the module docstring).

    One iteration moves every centre to the mean of its members and reassigns every point to
    its nearest centre, as in plain Lloyd. A point's distances are computed to the centres in
    its cluster's candidate lists (the union over its members, so one matrix product per
    cluster); its lower bound on every other centre shrinks by the largest centre move since
    its last exhaustive search, and when the nearest computed distance exceeds the bound the
    point is searched exhaustively again. A centre left without members moves to the point
    farthest from its own centre (as scikit-learn's KMeans), which shrinks every bound by that
    move, so the next iteration searches exhaustively.

    Args:
        x: ``[N, D] float32`` points (C-contiguous).
        init: ``[K, D]`` starting centres, 1 <= K <= N.
        n_iter: at most this many iterations (>= 1); fewer when an iteration changes no
            assignment (converged: further iterations change nothing).
        candidates: nearest centres kept per point between exhaustive searches (>= 1); only
            speed depends on it.

    Returns:
        KMeansResult: centres after the last update, each point's nearest of them, and the
        squared distances.

    Raises:
        ValueError: ``init`` has a different width from ``x``, or K outside ``[1, N]``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = np.array(init, dtype=np.float32, order="C")
    n, k = len(x), len(c)
    if c.ndim != 2 or c.shape[1] != x.shape[1] or not 1 <= k <= n:
        raise ValueError(f"init must be [K, {x.shape[1]}] with 1 <= K <= {n}, got shape {tuple(c.shape)}")
    m = max(1, min(int(candidates), k - 1)) if k > 1 else 1
    cand, bound = _nearest(x, c, m)
    a = cand[:, 0].copy()
    xn = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    diag = np.arange(k)
    threads = max(1, torch.get_num_threads())
    xs = np.empty_like(x)  # reused: a fresh 100 MB array per iteration costs its page faults
    done = 0
    for _ in range(int(n_iter)):
        done += 1
        order = np.argsort(a, kind="stable")
        start = np.searchsorted(a[order], np.arange(k + 1))
        size = np.diff(start)
        np.take(x, order, axis=0, out=xs)  # members of each cluster contiguous
        full = size > 0
        new = c.copy()
        for j in np.flatnonzero(full):
            new[j] = xs[start[j]:start[j + 1]].sum(0) / size[j]
        if not full.all():  # empty clusters take the points farthest from their own centres
            diff = x - c[a]
            far = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
            for j, i in zip(np.flatnonzero(~full), np.argsort(-far, kind="stable"), strict=False):
                new[j] = x[i]
        move = np.sqrt(np.square(new - c, dtype=np.float64).sum(1))
        c = new
        bound -= move.max()
        cn = np.einsum("ij,ij->i", c, c, dtype=np.float64)
        # candidate centres of each cluster: its members' candidates and itself
        pool = np.zeros((k, k), dtype=bool)
        pool[a[:, None], cand] = True
        pool[diag, diag] = True
        new_a = np.empty_like(a)
        near = np.empty(n, dtype=np.float64)

        nonempty = np.flatnonzero(full)
        reassign = functools.partial(_reassign, xs=xs, start=start, order=order, pool=pool, c=c, cn=cn,
                                     new_a=new_a, near=near)
        with one_blas_thread():
            if threads > 1 and len(nonempty) >= 2 * threads:
                # split the clusters into runs of about equal numbers of points
                cut = np.searchsorted(start[nonempty], np.arange(1, threads) * n / threads)
                with ThreadPoolExecutor(threads) as ex:
                    list(ex.map(reassign, np.split(nonempty, cut)))
            else:
                reassign(nonempty)
        near = np.sqrt(np.maximum(near + xn, 0.0))
        unsure = np.flatnonzero(near > bound)
        if len(unsure):
            cand[unsure], bound[unsure] = _nearest(x[unsure], c, m)
            new_a[unsure] = cand[unsure, 0]
        changed = bool((new_a != a).any())
        a = new_a
        if not changed:
            break
    diff = x - c[a]
    return KMeansResult(c, a.astype(np.int64), np.einsum("ij,ij->i", diff, diff).astype(np.float32), done)


#: at most this many rows, :func:`knn_sq_distances` uses one dense distance matrix (no faiss index)
DENSE_KNN_ROWS = 2048


def knn_sq_distances(x: np.ndarray, k: int) -> np.ndarray:
    """Squared Euclidean distances from each row of ``x`` to its ``k`` nearest other rows
    (exact; up to ``DENSE_KNN_ROWS`` rows one dense distance matrix on one thread, as
    TypiClust's per-cluster searches are many and small; above, faiss ``IndexFlatL2``, memory
    O(N k), never N x N).

    Args:
        x: ``[N, D]`` points; k: neighbours, 1 <= k <= N - 1.

    Returns:
        ``[N, k] float32``, ascending per row (a row itself is left out; an exact duplicate of
        a row counts as a neighbour at distance 0).

    Raises:
        ValueError: ``k`` outside ``[1, N - 1]``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if not 1 <= k <= n - 1:
        raise ValueError(f"need 1 <= k <= N - 1 = {n - 1} neighbours, got k={k}")
    if n <= DENSE_KNN_ROWS:
        with one_blas_thread():
            x64 = x.astype(np.float64)
            sq = np.einsum("ij,ij->i", x64, x64)
            d = sq[:, None] + sq[None, :] - 2.0 * (x64 @ x64.T)
        np.fill_diagonal(d, np.inf)  # leave each row itself out, keep its duplicates
        d = np.partition(d, k - 1, axis=1)[:, :k]
        return np.maximum(np.sort(d, axis=1), 0.0).astype(np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    dist, nb = index.search(x, k + 1)
    own = nb == np.arange(n)[:, None]
    # drop each row itself (normally column 0; among duplicates faiss may list it later)
    keep = ~own
    keep[~own.any(1), -1] = False  # row not found among k + 1 (many duplicates): drop the farthest
    return np.maximum(dist[keep].reshape(n, k), 0.0)
