"""``alframe-ssl``: train (or find in the cache) the self-supervised encoder of a dataset's pool.

::

    alframe-ssl dataset=mnist dataset.root=DATA dataset.download=false [ssl.epochs=10 ...]
    alframe-ssl --features OUT dataset=mnist ...      # also its features as train.npz / test.npz

The same settings as ``alframe ssl=simclr ...`` (``ssl=simclr`` is implied): the encoder lands in
the same cache folder (``ssl.cache_dir``, under ``paths.output_root``), so the jobs of a sweep
started afterwards read it instead of training it. It prints the checkpoint and the overrides that
use it in the frozen-feature mode. ``--features OUT`` writes the encoder's features of the train
source and the test split as ``OUT/train.npz`` and ``OUT/test.npz`` (``x [N, D] float32``,
``y [N] int64``: the files of ``dataset=features``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from alframe.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a bad value or a missing lightly prints one line and exits 2."""
    p = argparse.ArgumentParser(prog="alframe-ssl", description="Train (once; cached) the SimCLR encoder of a "
                                "dataset's pool, for the frozen-feature mode (alframe ssl=simclr model=frozen ...).")
    p.add_argument("--features", type=Path, metavar="OUT", help="also write its features as OUT/train.npz and "
                   "OUT/test.npz (dataset=features files)")
    p.add_argument("overrides", nargs="*", help="alframe config overrides (dataset=..., ssl.epochs=..., paths...)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from alframe.cli.run import CONFIG_DIR
    from alframe.config.checks import validate_ssl
    from alframe.config.schema import check_ranges
    from alframe.data.base import load_data
    from alframe.rundir.state import atomic_write
    from alframe.training.ssl_cache import encoder_features, pool_encoder

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=["ssl=simclr", *args.overrides])
        check_ranges(cfg)
        validate_ssl(cfg, need_backbone=False)
        data = load_data(cfg.dataset)
        spec = OmegaConf.to_container(cfg.ssl, resolve=True)
        enc = pool_encoder(spec, data, spec["cache_dir"], str(cfg.trainer.accelerator),
                           spec.get("threads") or cfg.trainer.get("threads"))
        if args.features:
            import numpy as np

            args.features.mkdir(parents=True, exist_ok=True)
            x, xt = encoder_features(enc, data, int(cfg.loop.eval_batch_size))
            y = data.targets if data.targets is not None else np.full(len(x), -1)
            for name, (f, labels) in {"train": (x, y), "test": (xt, data.test.y.numpy())}.items():
                atomic_write(args.features / f"{name}.npz", lambda fh, f=f, labels=labels: np.savez(
                    fh, x=f, y=np.asarray(labels, dtype=np.int64), ssl_fingerprint=np.array(enc.fingerprint)))
            print(f"features: {args.features / 'train.npz'} ({x.shape[0]} x {x.shape[1]}), "
                  f"{args.features / 'test.npz'} ({xt.shape[0]} x {xt.shape[1]})")
    except ConfigError as e:
        print(f"alframe-ssl: {e}", file=sys.stderr)
        return 2
    b = enc.backbone()
    given = " ".join(shlex.quote(o) for o in args.overrides)
    print(f"encoder: {enc.path} ({'trained now' if enc.trained else 'from the cache'}; fingerprint {enc.fingerprint}, "
          f"{enc.info['dim']} features)")
    print(f"use it:  alframe ssl=simclr model=frozen trainer=head {given}".rstrip())
    print(f"or as a checkpoint: alframe model=frozen trainer=head model.backbone.name={b['name']} "
          f"model.backbone.weights=null model.backbone.checkpoint={shlex.quote(b['checkpoint'])}"
          + "".join(f" +model.backbone.kwargs.{k}={v}" for k, v in b["kwargs"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
