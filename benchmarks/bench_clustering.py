"""Clustering strategies at scale: alframe's k-means (``kmeans`` sampling, ``typiclust``)
against scikit-learn's KMeans on 50,000 x 512 clustered embeddings with k = 1,000 (the sizes of
issue 14; goal: under 15 s on 2 cores, inertia within 1% of scikit-learn's).

Quality: the inertia ratio (alframe / scikit-learn, <= 1.01 is the goal) and the coverage of the
picks (sum of squared distances from every point to its nearest pick, alframe's picks over
those taken the same way from scikit-learn's clusters: ~1 means the same kind of picks).

``python -m benchmarks clustering`` (``--n 20000 --k 400`` for other sizes); ``ALFRAME_BENCH_SMALL=1``
shrinks the sizes tenfold.
scikit-learn's KMeans alone takes minutes at full size.
"""

from __future__ import annotations

import argparse
import os
import sys

import faiss
import numpy as np
import torch

from alframe.strategies.diversity import KMeansSampling, TypiClust, min_sq_distances, nearest_members
from benchmarks.bench_strategies import SCALE, SMALL, _outputs, _row, clustered, measure  # noqa: F401


def pick_inertia(x: torch.Tensor, picks: np.ndarray) -> float:
    """Sum over all rows of the squared distance to the nearest pick (how well the picks cover
    the pool, the k-means objective with the picks as centres)."""
    return float(min_sq_distances(x, x[torch.as_tensor(picks)]).double().sum())


def bench_kmeans(x: torch.Tensor, k: int = 1000, sklearn: bool = True):
    """alframe's k-means (kmeans, typiclust), then scikit-learn's KMeans on the same points (unless
    ``sklearn`` is False: it takes minutes at full size)."""
    from sklearn.cluster import KMeans

    from alframe.strategies.clustering import kmeans

    xn = x.numpy()
    print(f"k-means, D={x.shape[1]}, k={k} (faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; "
          f"scikit-learn KMeans k-means++, n_init=1, max_iter=300):")
    ours, sec, peak = measure(lambda: kmeans(xn, k, 20, np.random.default_rng(0)))
    _row("alframe k-means (max 20 iter)", x.shape[0], sec, peak,
         f"inertia {ours.inertia:.6g} ({ours.iterations} iter)")
    picks, sec, peak = measure(lambda: KMeansSampling().query(_outputs(x), k, np.random.default_rng(0)))
    _row("alframe kmeans strategy", x.shape[0], sec, peak, f"{len(set(picks.tolist()))} distinct picks")
    typ = TypiClust(max_clusters=k)
    typ_picks, tsec, tpeak = measure(lambda: typ.query(_outputs(x, x[:0]), k, np.random.default_rng(0)))
    _row("alframe typiclust (k clusters)", x.shape[0], tsec, tpeak, f"{len(set(typ_picks.tolist()))} distinct picks")
    if not sklearn:
        return
    sys.stdout.flush()
    sk, sk_sec, sk_peak = measure(lambda: KMeans(k, n_init=1, max_iter=300, random_state=0).fit(xn))
    sk_picks = nearest_members(xn, sk.labels_.astype(np.int64), sk.cluster_centers_.astype(np.float32))
    ratio = pick_inertia(x, picks) / pick_inertia(x, sk_picks)
    _row("scikit-learn KMeans", x.shape[0], sk_sec, sk_peak,
         f"inertia {sk.inertia_:.6g} ({sk.n_iter_} iter) -> alframe/sklearn inertia {ours.inertia / sk.inertia_:.4f}; "
         f"coverage of alframe's kmeans picks vs sklearn's {ratio:.4f}")


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_clustering")
    p.add_argument("--n", type=int, default=50_000 // SCALE, help="points (50,000)")
    p.add_argument("--k", type=int, default=1000 // SCALE, help="clusters = queried samples (1,000)")
    p.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn's KMeans (minutes at full size)")
    args, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)  # `python -m benchmarks clustering`
    print(f"threads: torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()}; "
          f"load average: {os.getloadavg()[0]:.1f}" + ("  [ALFRAME_BENCH_SMALL: sizes / 10]" if SMALL else ""))
    bench_kmeans(clustered(args.n, 512, seed=0), args.k, sklearn=not args.no_sklearn)


if __name__ == "__main__":
    main()
