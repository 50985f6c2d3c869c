"""Diversity strategies at scale: seconds and peak memory of alframe's chunked Core-set
(k-center greedy) and factorised BADGE, next to naive full-matrix versions (k-means sampling
and TypiClust: ``bench_clustering.py``).

Peak memory is the growth of the process's resident set during one call (Linux: the peak is
reset through ``/proc/self/clear_refs`` before each case), so it counts torch, numpy and
scikit-learn allocations alike. The naive full-matrix Core-set needs (N + L)^2 floats (10.4 GB
at N = 50,000), too much for a shared 24 GiB machine, so it runs at N = 20,000 (1.8 GB) next to
the chunked one at the same size; its time at 50,000 is extrapolated by (N + L)^2.

Sizes: ``python -m benchmarks strategies`` runs the issue's sizes; ``ALFRAME_BENCH_SMALL=1``
shrinks everything tenfold for a quick check.
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import torch

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.diversity import BADGE, CoreSet

SMALL = os.environ.get("ALFRAME_BENCH_SMALL") == "1"
SCALE = 10 if SMALL else 1


def _status(key: str) -> int:
    """A ``/proc/self/status`` entry in bytes (0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(fn):
    """``(result, seconds, peak_extra_bytes)`` of one call of ``fn``."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set (VmHWM) to the current one
    except OSError:
        pass
    base = _status("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    sec = time.perf_counter() - t0
    return out, sec, max(_status("VmHWM") - base, 0)


def clustered(n: int, d: int, seed: int, centres: int = 50) -> torch.Tensor:
    """``[n, d] float32`` points around ``centres`` Gaussian centres (like ReLU-net embeddings)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centres, d, generator=g) * 3
    return (c[torch.randint(centres, (n,), generator=g)] + torch.randn(n, d, generator=g)).relu_()


def naive_coreset(x: torch.Tensor, lab: torch.Tensor, k: int) -> np.ndarray:
    """k-center greedy over a precomputed full (N + L) x (N + L) distance matrix (as in DeepAL's
    KCenterGreedy), with in-place arithmetic so the matrix is the only O(N^2) allocation."""
    allx = torch.cat([x, lab])
    n = x.shape[0]
    sq = allx.square().sum(1)
    d = torch.mm(allx, allx.T)
    d.mul_(-2).add_(sq[:, None]).add_(sq[None, :]).clamp_min_(0)
    dist = d[:n, n:].min(dim=1).values if lab.shape[0] else torch.full((n,), torch.inf)
    chosen = []
    for _ in range(k):
        j = int(torch.argmax(dist))
        chosen.append(j)
        torch.minimum(dist, d[:n, j], out=dist)
        dist[j] = -torch.inf
    return np.asarray(chosen)


def _outputs(x, lab=None, probs=None) -> ModelOutputs:
    out = ModelOutputs(idx=np.arange(x.shape[0]), embeddings=x, probs=probs)
    if lab is not None:
        out.labelled_idx = np.arange(x.shape[0], x.shape[0] + lab.shape[0])
        out.labelled_embeddings = lab
    return out


def _row(name, n, sec, peak, note=""):
    print(f"  {name:<34} N={n:>6}  {sec:8.2f} s  peak +{peak / 2**20:8.1f} MiB  {note}", flush=True)


def bench_coreset(d: int = 512, n_lab: int = 1000, k: int = 1000):
    n_full, n_naive = 50_000 // SCALE, 20_000 // SCALE
    n_lab, k = n_lab // SCALE, k // SCALE
    lab = clustered(n_lab, d, seed=1)
    print(f"Core-set (k-center greedy), D={d}, labelled {n_lab}, query {k}:")
    x = clustered(n_naive, d, seed=0)
    picks_naive, t_naive, m_naive = measure(lambda: naive_coreset(x, lab, k))
    _row("naive full (N+L)^2 matrix", n_naive, t_naive, m_naive)
    picks, t_chunk, m_chunk = measure(lambda: CoreSet().query(_outputs(x, lab), k, np.random.default_rng(0)))
    same = np.mean(np.asarray(picks) == picks_naive)
    _row("alframe coreset (chunked)", n_naive, t_chunk, m_chunk,
         f"time {t_naive / t_chunk:.1f}x faster, {m_naive / max(m_chunk, 1):.0f}x less memory; "
         f"same picks {same:.0%}")
    del x
    x = clustered(n_full, d, seed=0)
    _, t_full, m_full = measure(lambda: CoreSet().query(_outputs(x, lab), k, np.random.default_rng(0)))
    scale = ((n_full + n_lab) / (n_naive + n_lab)) ** 2
    _row("alframe coreset (chunked)", n_full, t_full, m_full,
         f"naive extrapolated: ~{t_naive * scale:.0f} s, {(n_full + n_lab) ** 2 * 4 / 2**30:.1f} GiB matrix "
         f"-> {t_naive * scale / t_full:.0f}x")
    return x, lab


def bench_badge(n: int = 20_000, c: int = 100, d: int = 512, k: int = 1000):
    n, k = n // SCALE, k // SCALE
    print(f"BADGE (factorised k-means++ on gradient embeddings), C={c}, D={d}, query {k}:")
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(n, c, generator=g) * 3, dim=1)
    h = clustered(n, d, seed=2)
    _, sec, peak = measure(lambda: BADGE().query(_outputs(h, probs=probs), k, np.random.default_rng(0)))
    _row("alframe badge (factorised)", n, sec, peak,
         f"(explicit gradient matrix N x C*D would be {n * c * d * 4 / 2**30:.1f} GiB in float32)")


def main():
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}, load average: {os.getloadavg()[0]:.1f}"
          + ("  [ALFRAME_BENCH_SMALL: sizes / 10]" if SMALL else ""))
    x, _ = bench_coreset()  # k-means sampling and TypiClust: benchmarks/bench_clustering.py
    del x
    gc.collect()
    bench_badge()


if __name__ == "__main__":
    main()
