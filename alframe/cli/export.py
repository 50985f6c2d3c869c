"""``alframe-export``: the labelled dataset of a run folder as CSV, ImageFolder or Label Studio tasks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alframe.errors import ConfigError
from alframe.export.dataset import FORMATS, export


def main(argv: Sequence[str] | None = None) -> int:
    """``alframe-export`` entry point; a bad argument or run folder prints one line and exits 2."""
    p = argparse.ArgumentParser(prog="alframe-export", description="Export the labelled dataset of an alframe run "
                                "(oracle labels + the last model's machine labels for the rest of the pool).")
    p.add_argument("run_dir", help="the run folder (printed as 'Run folder:' by alframe)")
    p.add_argument("--format", default="csv", choices=FORMATS, help="output format (default: csv)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--accept-above", type=float, default=None, metavar="T",
                   help="keep machine labels only where the model's confidence >= T (0..1); the rest stay unlabelled")
    p.add_argument("--link", action="store_true", help="imagefolder: symbolic links instead of copies")
    args = p.parse_args(argv)
    try:
        out, counts = export(args.run_dir, args.format, args.out, args.accept_above, args.link)
    except ConfigError as e:
        print(f"alframe-export: error: {e}", file=sys.stderr)
        return 2
    no_model = counts.pop("no model yet", 0)
    print(f"Exported {sum(counts.values())} samples as {args.format} to {out}: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if no_model:
        print("No model has been trained in this run yet: the rest of the pool has no machine labels.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
