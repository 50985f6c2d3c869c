"""``alframe-predict``: label a folder of images with a run's final model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alframe.errors import ConfigError
from alframe.export.predict import predict_folder


def main(argv: Sequence[str] | None = None) -> int:
    """``alframe-predict`` entry point; a bad run folder or image folder prints one line and exits 2."""
    p = argparse.ArgumentParser(prog="alframe-predict",
                                description="Label a folder of new images with the last model of an alframe run.")
    p.add_argument("run_dir", help="the run folder (printed as 'Run folder:' by alframe)")
    p.add_argument("folder", help="folder of images (searched recursively)")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    p.add_argument("--batch-size", type=int, default=256, help="images decoded and classified at a time")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        print(f"alframe-predict: error: --batch-size {args.batch_size} is invalid: must be an integer >= 1",
              file=sys.stderr)
        return 2
    try:
        out, n, bad = predict_folder(args.run_dir, args.folder, args.out, args.batch_size)
    except ConfigError as e:
        print(f"alframe-predict: error: {e}", file=sys.stderr)
        return 2
    for path, why in bad:
        print(f"alframe-predict: skipped unreadable {path} ({why})", file=sys.stderr)
    print(f"Labelled {n} images of {args.folder} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
