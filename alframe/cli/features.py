"""``alframe-features``: a frozen backbone's features of a dataset, written as ``dataset=features`` files.

::

    alframe-features OUT_DIR dataset=mnist dataset.root=DATA dataset.download=false model=frozen \\
        model.backbone.name=alframe.models.cnn.GalCNN model.backbone.weights=null \\
        model.backbone.checkpoint=RUN/last_model.pt

writes ``OUT_DIR/train.npz`` and ``OUT_DIR/test.npz`` (``x [N, D] float32``, ``y [N] int64`` and the
fingerprints of backbone and data), the same files a ``model=frozen`` run caches in its folder;
then ``alframe dataset=features dataset.train=OUT_DIR/train.npz dataset.test=OUT_DIR/test.npz
model=head trainer=head`` trains heads on them. Files already there with the same fingerprints
are kept; files of another backbone or other data are refused.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from alframe.errors import ConfigError, StateMismatchError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit code 2 with a one-line message for a bad config or foreign files."""
    p = argparse.ArgumentParser(prog="alframe-features", description="Write a frozen backbone's features of a "
                                "dataset as dataset=features files (train.npz, test.npz).")
    p.add_argument("out", type=Path, help="folder for train.npz and test.npz")
    p.add_argument("overrides", nargs="*", help="alframe config overrides (dataset=..., model=frozen, model.backbone...)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from alframe.cli.run import CONFIG_DIR
    from alframe.data.base import load_data
    from alframe.models.backbone import build_backbone
    from alframe.training.frozen import cached_features
    from alframe.training.trainer import device_of

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(args.overrides))
        if cfg.model.get("backbone") is None:
            raise ConfigError(f"model={cfg.model.get('name')} has no backbone: use model=frozen (model.backbone...)")
        data = load_data(cfg.dataset)
        backbone = build_backbone(OmegaConf.to_container(cfg.model.backbone, resolve=True), data.num_classes,
                                  data.input_shape, data.extras.get("mean"), data.extras.get("std"))
        (x, _), (xt, _), fps = cached_features(backbone, data, args.out, int(cfg.loop.eval_batch_size),
                                               device_of(cfg))
    except (ConfigError, StateMismatchError) as e:
        print(f"alframe-features: {e}", file=sys.stderr)
        return 2
    print(f"{args.out / 'train.npz'}: {x.shape[0]} x {x.shape[1]}; {args.out / 'test.npz'}: {xt.shape[0]} x "
          f"{xt.shape[1]} (backbone {fps['backbone_fingerprint']}, data {fps['data_fingerprint']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
