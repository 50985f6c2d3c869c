"""BatchBALD acquisition: alframe against the authors' ``batchbald_redux`` on the same inputs.

2,000 candidates, T = 20 MC samples, C = 10 classes, batch 10, 10,000 sampled configurations once
the exact joint (C^n configurations) would exceed that (from the 5th pick on, in both). Inputs are
seeded synthetic MC-dropout probabilities with the spread of a half-trained MNIST model (the cost
does not depend on the values). Both run on one thread, interleaved, best of ``REPEATS``; the
times are CPU seconds of this process (``time.process_time``, one thread: the work done, much
less sensitive than wall time to other jobs on a shared machine). Prints the seconds, the ratio
(target: alframe >= 4x faster) and how many of the first picks agree (the exact-joint picks
must; sampled picks may differ, each implementation draws its own samples).
``ALFRAME_BENCH_CANDIDATES=500`` scores fewer candidates (both costs grow linearly with it).

``batchbald_redux`` is not an alframe dependency: ``pip install batchbald_redux`` to compare;
without it only alframe is timed and the comparison is skipped with a message.
"""

from __future__ import annotations

import contextlib
import io
import os
import time

import numpy as np
import torch

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.batch import BatchBALD

N = int(os.environ.get("ALFRAME_BENCH_CANDIDATES", 2000))
T, C, K, SAMPLES = 20, 10, 10, 10_000
REPEATS = 1
TARGET = 4.0


def mc_probs(seed: int = 0) -> torch.Tensor:
    """``[N, T, C] float32`` softmax of a per-point mean logit plus per-sample noise."""
    g = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(N, 1, C, generator=g) + 1.5 * torch.randn(N, T, C, generator=g)
    return torch.softmax(logits, dim=-1)


def alframe_picks(p: torch.Tensor) -> list[int]:
    out = ModelOutputs(idx=np.arange(len(p)), mc_probs=p)
    return BatchBALD(mc_samples=T, num_samples=SAMPLES).query(out, K,
                                                               np.random.default_rng(0)).tolist()


def redux_picks(p: torch.Tensor) -> list[int]:
    from batchbald_redux.batchbald import get_batchbald_batch

    torch.manual_seed(0)
    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm progress bars
        return list(get_batchbald_batch(p.double().log(), K, SAMPLES, dtype=torch.double).indices)


def timed(fn, *args):
    """(CPU seconds of this process, result) of ``fn(*args)``."""
    t0 = time.process_time()
    out = fn(*args)
    return time.process_time() - t0, out


def main():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        p = mc_probs()
        exact = next(n for n in range(1, K + 1) if C ** n > SAMPLES)  # picks made with the exact joint
        print(f"BatchBALD: {N} candidates, T={T}, C={C}, batch {K}, {SAMPLES:,} sampled configurations; "
              f"1 thread, load average {os.getloadavg()[0]:.1f}")
        try:
            import batchbald_redux  # noqa: F401
        except ImportError:
            secs, _ = timed(alframe_picks, p)
            print(f"  alframe          {secs:7.2f} CPU s")
            print("  batchbald_redux: skipped, not installed (pip install batchbald_redux; not an alframe "
                  "dependency)")
            return
        t_a, t_r = [], []
        for _ in range(REPEATS):  # interleaved: both see the same machine load
            s, a = timed(alframe_picks, p)
            t_a.append(s)
            s, r = timed(redux_picks, p)
            t_r.append(s)
        same = next((i for i, (x, y) in enumerate(zip(a, r, strict=True)) if x != y), K)
        ratio = min(t_r) / min(t_a)
        print(f"  alframe          {min(t_a):7.2f} CPU s   picks {a}")
        print(f"  batchbald_redux  {min(t_r):7.2f} CPU s   picks {r}")
        print(f"  ratio {ratio:.1f}x (target >= {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'}); "
              f"the first {same} picks agree (exact joint for the first {exact}: "
              f"{'ok' if same >= exact else 'MISMATCH'})")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
