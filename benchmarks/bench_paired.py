"""Calibration of the paired-comparison verdicts (:mod:`alframe.reporting.paired`) with no effect.

Draws ``--samples`` sets of n standard-normal per-seed differences (true mean 0) for n in 2, 3,
5, 10, 20 and counts how often :func:`alframe.reporting.paired.compare` (module defaults: 9,999
BCa resamples, 95%) gives an interval that excludes 0, and how often its verdict says "better"
or "worse" (the interval and the paired t-test both reject). Both should be about 5%; the
bootstrap interval alone is far more often wrong with few seeds, which is why the verdict also
asks the t-test. About 2 ms per comparison (1,000 samples: about 15 s in all).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from alframe.reporting.paired import compare


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_paired")
    p.add_argument("--samples", type=int, default=1000, help="null samples per number of seeds (1,000)")
    args, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)  # `python -m benchmarks paired`
    g = np.random.default_rng(12345)
    print(f"{args.samples} samples of standard-normal differences with mean 0 per number of seeds")
    for n in (2, 3, 5, 10, 20):
        t0 = time.perf_counter()
        interval = verdict = 0
        for _ in range(args.samples):
            r = compare(g.normal(size=n))
            interval += bool(r["ci_low"] > 0 or r["ci_high"] < 0)
            verdict += r["verdict"] in ("better", "worse")
        print(f"n = {n:2d} seeds: interval excludes 0 in {interval / args.samples:6.1%}, verdict better/worse "
              f"in {verdict / args.samples:6.1%} (target 5%)  [{time.perf_counter() - t0:.1f} s]", flush=True)


if __name__ == "__main__":
    main()
