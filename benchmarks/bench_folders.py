"""Pools larger than memory: an ``image_folder`` of generated 128 px JPEG files, decoded on
access (``dataset.cache=false``, DataLoader worker processes) against in memory
(``dataset.cache=true``).

For each mode a fresh Python process loads the folder (``alframe.data.base.load_data``: every
file is checked and the channel statistics gathered before training), then scores the whole
pool, once with the DataLoader alone and once with a small CNN (``alframe.scoring.pool.compute_outputs``,
class probabilities, batches of 512). It reports the seconds of the check, images/s of both
passes, and the peak resident memory of
the main process (``ru_maxrss``) and of its largest worker. Goal (issue 14): under 2 GB at
100,000 files lazily. In memory, 100,000 x 3 x 128 x 128 float32 would need 18.3 GiB, so the
cached mode runs on the first ``--n-cached`` files (10,000, 1.8 GiB), next to lazy on the same.

The files are generated once (10 class folders of smooth random colour images, JPEG quality 90)
into ``outputs/bench_cache/jpeg128_<n>/`` and reused.

    python -m benchmarks folders                          # 100,000 files (make bench)
    python -m benchmarks.bench_folders --n 20000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128


def generate(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEG files ``root/c<k>/<i>.jpg`` (128 x 128 RGB, 10 classes), made once."""
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for i in range(n):
        d = root / f"c{i % 10}"
        if i < 10:
            d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)  # smooth: 8x8 noise, upscaled
        Image.fromarray(small).resize((SIZE, SIZE), Image.BICUBIC).save(d / f"{i:06d}.jpg", quality=90)
        if (i + 1) % 10_000 == 0:
            print(f"  generated {i + 1:,} files ({time.perf_counter() - t0:.0f} s)", flush=True)
    done.write_text(str(n))
    return root


def child(root: str, cache: str, workers: int, limit: int | None) -> dict:
    """One measurement, run in a fresh process so ``ru_maxrss`` is this mode's peak."""
    import torch
    from hydra import compose, initialize_config_dir

    from alframe.data.base import IndexedImages, load_data, make_loader
    from alframe.models.cnn import SmallCNN
    from alframe.scoring.pool import compute_outputs

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset=image_folder", f"dataset.root={root}", f"dataset.image_size={SIZE}",
            f"dataset.cache={cache}", f"dataset.num_workers={workers}", "dataset.test_size=0.01"])
    t0 = time.perf_counter()
    data = load_data(cfg.dataset)
    load_s = time.perf_counter() - t0
    torch.manual_seed(0)
    idx = np.arange(data.n_train if limit is None else min(limit, data.n_train))
    t0 = time.perf_counter()
    for _ in make_loader(IndexedImages(data.train, idx), batch_size=512):  # the data path alone
        pass
    read_s = time.perf_counter() - t0
    # a small CNN on 8x-downsampled input, so the scoring time is mostly the data path
    net = SmallCNN(num_classes=10, input_shape=(3, SIZE // 8, SIZE // 8))
    net.trunk = torch.nn.Sequential(torch.nn.AvgPool2d(8), *net.trunk)
    t0 = time.perf_counter()
    probs = compute_outputs(net, data.train, idx, {"probs"}, batch_size=512).probs
    score_s = time.perf_counter() - t0
    assert probs.shape == (len(idx), 10)
    return {"cache": cache, "cached": bool(data.extras["cached"]), "files": data.n_train + len(data.test),
            "scored": len(idx), "load_s": load_s, "score_s": score_s, "images_per_s": len(idx) / score_s,
            "read_per_s": len(idx) / read_s,
            "peak_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _run(root: Path, cache: str, workers: int, limit: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_folders", "--child", "--root", str(root), "--cache", cache,
           "--workers", str(workers)] + (["--limit", str(limit)] if limit else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print(r: dict, what: str) -> None:
    print(f"  {what:<24} files={r['files']:>7,}  check+load {r['load_s']:7.1f} s  scoring "
          f"{r['images_per_s']:7.0f} images/s, loader alone {r['read_per_s']:7.0f} images/s ({r['scored']:,})  peak RSS main {r['peak_main_mib']:7.0f} MiB, "
          f"largest worker {r['peak_worker_mib']:5.0f} MiB", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_folders")
    p.add_argument("--n", type=int, default=int(os.environ.get("ALFRAME_BENCH_FOLDER_N", 100_000)))
    p.add_argument("--n-cached", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2, help="dataset.num_workers of the lazy mode")
    p.add_argument("--cache-dir", default=str(ROOT / "outputs" / "bench_cache"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)  # `python -m benchmarks folders`
    if args.child:
        print(json.dumps(child(args.root, args.cache, args.workers, args.limit)))
        return
    if os.environ.get("ALFRAME_BENCH_SMALL") == "1":
        args.n, args.n_cached = min(args.n, 2_000), min(args.n_cached, 1_000)
    n_cached = min(args.n_cached, args.n)
    print(f"{args.n:,} JPEG files of {SIZE} px, lazy with {args.workers} worker processes; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    big = generate(Path(args.cache_dir) / f"jpeg{SIZE}_{args.n}", args.n)
    small = generate(Path(args.cache_dir) / f"jpeg{SIZE}_{n_cached}", n_cached)
    lazy_small = _run(small, "false", args.workers)
    _print(lazy_small, "lazy (cache=false)")
    cached = _run(small, "true", 0)
    _print(cached, "in memory (cache=true)")
    print(f"  -> at {n_cached:,} files lazy scores at {lazy_small['images_per_s'] / cached['images_per_s']:.2f}x "
          f"the in-memory rate", flush=True)
    if args.n > n_cached:
        lazy = _run(big, "auto", args.workers)  # auto: 100,000 files do not fit, decoded on access
        _print(lazy, f"cache=auto ({'in memory' if lazy['cached'] else 'lazy'})")
        print(f"  -> peak RSS {max(lazy['peak_main_mib'], lazy['peak_worker_mib']) / 1024:.2f} GiB "
              f"(goal < 2 GB); in memory would need {args.n * 3 * SIZE * SIZE * 4 / 2**30:.1f} GiB of images",
              flush=True)


if __name__ == "__main__":
    main()
