"""Head-only rounds on precomputed features (``dataset=features model=head trainer=head``).

1. One round on 50,000 x 512 features: :func:`alframe.training.trainer.fit` trains the head on
   1,000 labels through Lightning (``trainer=head``: 100 Adam steps, batch 256), then the pool of
   the other 49,000 (less 100 validation) is scored and the strategy picks 10. Goal: under 1 s on
   2 cores. Margin (probabilities) and BALD (20 MC-dropout samples of the head) are timed; the
   median of ``--repeats`` rounds after one warm-up round is printed.
2. A sweep of ``--seeds`` seeds x 4 strategies (random, margin, entropy, BALD) x 30 rounds
   (20 initial labels, 10 per round) on MNIST-sized features (8,000 train / 2,000 test x 128,
   Gaussian class clusters), the ``alframe -m`` command with the joblib launcher (2 jobs at a
   time, ``OMP_NUM_THREADS=1`` each), MLflow logging to a fresh SQLite store, no MLflow model.
   Goal: 20 seeds in under 15 minutes on 2 cores. ``--seeds 0`` skips it. The load average
   before and after is printed: other people's work on the same cores slows it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from alframe.data.features import feature_data
from alframe.rundir.state import PoolState
from alframe.scoring.pool import compute_outputs
from alframe.strategies.bayesian import BALD
from alframe.strategies.uncertainty import Margin
from alframe.training.seeds import round_rng
from alframe.training.trainer import fit

REPO = Path(__file__).resolve().parents[1]


def clusters(n: int, d: int, c: int = 10, seed: int = 0, spread: float = 0.35):
    """``(x [n, d] float32, y [n] int64)``: Gaussian class clusters (unit noise, means ``spread * N(0, 1)``)."""
    g = np.random.default_rng(seed)
    means = np.random.default_rng(1234).normal(size=(c, d)) * spread
    y = g.integers(0, c, n)
    return (means[y] + g.normal(size=(n, d))).astype(np.float32), y.astype(np.int64)


def one_round(repeats: int) -> None:
    x, y = clusters(50_000, 512)
    xt, yt = clusters(10_000, 512, seed=1)
    data = feature_data("bench", x, y, xt, yt, np.arange(100), 10, [str(i) for i in range(10)], True, "bench")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=head", "trainer=head"])
    state = PoolState.create(data.n_train, holdout=data.val_idx)
    first = np.random.default_rng(0).choice(state.pool_idx, 1000, replace=False)
    state.label(first, data.targets[first], 0)
    pool = state.pool_idx
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in (Margin(), BALD(mc_samples=20)):
            rows = []
            for r in range(repeats + 1):
                t0 = time.perf_counter()
                net = fit(cfg, data, state, r, Path(tmp))
                t1 = time.perf_counter()
                torch.manual_seed(r)
                out = compute_outputs(net, data.train, pool, strategy.requires, mc_samples=20)
                t2 = time.perf_counter()
                strategy.query(out, 10, round_rng(0, r))
                t3 = time.perf_counter()
                rows.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
            fit_s, score_s, query_s, total = (statistics.median(col) for col in zip(*rows[1:], strict=True))
            print(f"one round, 50,000 x 512 features, 1,000 labels, {strategy.name}: {total:.2f} s "
                  f"(fit {fit_s:.2f} + score {len(pool)} {score_s:.2f} + query {query_s:.3f}; goal < 1 s; "
                  f"torch threads {torch.get_num_threads()})", flush=True)


def sweep(seeds: int, jobs: int) -> None:
    strategies = "random,margin,entropy,bald"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x, y = clusters(8000, 128)
        xt, yt = clusters(2000, 128, seed=1)
        np.savez(tmp / "train.npz", x=x, y=y)
        np.savez(tmp / "test.npz", x=xt, y=yt)
        cmd = [sys.executable, "-m", "alframe.cli", "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}",
               "dataset=features", f"dataset.train={tmp / 'train.npz'}", f"dataset.test={tmp / 'test.npz'}",
               "model=head", "trainer=head", f"strategy={strategies}", f"seed=range(0,{seeds})",
               "loop.initial_size=20", "loop.query_size=10", "loop.rounds=30", "mlflow.log_model=false",
               "mlflow.experiment_name=bench_frozen", f"paths.output_root={tmp / 'out'}"]
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), os.times()
        done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                              text=True)
        wall, c1 = time.perf_counter() - t0, os.times()
        if done.returncode:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"sweep failed with exit code {done.returncode}")
        cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
        n = 4 * seeds
        print(f"sweep {seeds} seeds x 4 strategies x 30 rounds (8,000 x 128 features, {n} jobs, {jobs} at a time): "
              f"{wall:.0f} s wall ({wall / 60:.1f} min; goal < 15 min for 20 seeds), {cpu:.0f} CPU s "
              f"({cpu / n:.1f} per job, {cpu / n / 31:.2f} per round); load average {load0:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores)", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_frozen")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per strategy after one warm-up (3)")
    p.add_argument("--seeds", type=int, default=int(os.environ.get("ALFRAME_BENCH_FROZEN_SEEDS", 20)),
                   help="seeds of the sweep (20; 0 skips it)")
    p.add_argument("--jobs", type=int, default=2, help="sweep jobs at a time (2)")
    args, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)  # `python -m benchmarks frozen`
    one_round(args.repeats)
    if args.seeds > 0:
        sweep(args.seeds, args.jobs)


if __name__ == "__main__":
    main()
