"""One thread or two: wall time of whole ``alframe`` runs at ``trainer.threads=1`` and ``=2``, on
an idle machine and with other work running, for the default model and the paper model.

Workloads (each a fresh run folder and MLflow store, in a subprocess, as a user runs it):

- ``default``: ``alframe`` as shipped (the small CNN on 8x8 digits, 20 + 15 x 10 labels);
- ``paper``: ``experiment=gal2017_mnist_cpu`` (Gal et al.'s CNN on 28x28 MNIST, the gal2017
  training protocol, MC dropout T = 20 on 1,000 pool images) cut to ``loop.rounds=3`` (4 fits),
  on the 10,000-digit MNIST subset (``--mnist10k DIR``, ``$ALFRAME_MNIST10K`` or
  ``../shared/data/mnist10k`` beside the repository; left out with a message without it).

"Loaded" starts ``--busy`` processes (default: one per core) that spin on the CPU for the whole
measurement, the stand-in for other people's jobs on a shared machine; "idle" starts none (the
machine must be otherwise idle: check ``uptime``). Each cell is the best of ``--reps`` runs,
interleaved 1, 2, 1, 2, ... Printed: wall seconds, the run's CPU seconds (its process tree) and
the ratio 2 threads / 1 thread.

Usage: ``python -m benchmarks.bench_threads [--workloads default paper] [--loads idle loaded]
[--reps 2] [--busy N]`` (``make bench ARGS=threads`` runs it with the defaults).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mnist10k(arg: str | None) -> Path | None:
    for c in (arg, os.environ.get("ALFRAME_MNIST10K"), REPO.parent / "shared" / "data" / "mnist10k"):
        if c and (Path(c) / "MNIST" / "raw").is_dir():
            return Path(c)
    return None


def workload_args(name: str, data: Path | None) -> list[str] | None:
    if name == "default":
        return []
    if data is None:
        return None
    return ["experiment=gal2017_mnist_cpu", f"dataset.root={data}", "dataset.download=false", "loop.rounds=3",
            "loop.target_accuracy=null"]


def spin(stop) -> None:  # a busy core: another person's job
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def one_run(args: list[str], threads: int) -> tuple[float, float]:
    """``(wall s, CPU s of the run's process tree)`` of one ``alframe`` run at ``threads``."""
    with tempfile.TemporaryDirectory(prefix="alframe-threads-") as out:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "alframe.cli", *args, f"trainer.threads={threads}", f"paths.output_root={out}",
               f"hydra.run.dir={out}/run"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            raise SystemExit(f"alframe {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", nargs="+", default=["default", "paper"], choices=["default", "paper"])
    ap.add_argument("--loads", nargs="+", default=["idle", "loaded"], choices=["idle", "loaded"])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="spinning processes when loaded")
    ap.add_argument("--mnist10k", default=None)
    a = ap.parse_args([] if argv is None else argv)
    data = mnist10k(a.mnist10k)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; best of {a.reps}")
    print(f"{'workload':<9} {'load':<7} {'1 thread: wall / CPU s':>24} {'2 threads: wall / CPU s':>25} {'2 / 1 wall':>11}")
    for name in a.workloads:
        args = workload_args(name, data)
        if args is None:
            print(f"{name:<9} left out: no mnist10k folder (--mnist10k DIR or $ALFRAME_MNIST10K)")
            continue
        for load in a.loads:
            stop, spinners = mp.Event(), []
            if load == "loaded":
                spinners = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(a.busy)]
                for p in spinners:
                    p.start()
            try:
                best: dict[int, tuple[float, float]] = {}
                for _ in range(a.reps):
                    for threads in (1, 2):
                        wall, cpu = one_run(args, threads)
                        if threads not in best or wall < best[threads][0]:
                            best[threads] = (wall, cpu)
            finally:
                stop.set()
                for p in spinners:
                    p.join()
            (w1, c1), (w2, c2) = best[1], best[2]
            print(f"{name:<9} {load:<7} {w1:>13.1f} / {c1:>7.1f} {w2:>14.1f} / {c2:>7.1f} {w2 / w1:>10.2f}x",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
