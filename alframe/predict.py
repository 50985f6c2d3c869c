"""``alframe-predict RUN_DIR FOLDER``: label a folder of new images with a run's last model.

Every image file under ``FOLDER`` (any sub-folders, sorted by path) is decoded as the run's
training images were (channels, image size, crop; ``preprocessing.json`` of the run), normalised
with the run's statistics and classified by ``last_model.pt``. The result is a CSV with columns
``file,label,confidence`` (``file`` relative to ``FOLDER``, ``label`` the class name,
``confidence`` the arg-max softmax probability). Unreadable files are listed on stderr and left out.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate

from alframe.config import ConfigError
from alframe.data.base import DatasetError, load_data
from alframe.data.folders import EXTENSIONS, relative_files
from alframe.mlmodel import PREPROCESSING_FILE, Preprocessing, predict_pixels
from alframe.models.base import ALNet
from alframe.runfolder import MODEL_FILE, RunFolderError, read_config


def load_predictor(run_dir: str | Path) -> tuple[ALNet, Preprocessing]:
    """The run's last network (eval mode) and its preprocessing.

    ``preprocessing.json`` is read when present (runs since it exists); otherwise the dataset is
    loaded once to recover the normalisation.

    Raises:
        RunFolderError: no ``config.yaml`` or no ``last_model.pt`` (nothing trained yet).
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    weights = run_dir / MODEL_FILE
    if not weights.is_file():
        raise RunFolderError(f"{weights} not found: no model has been trained in this run yet")
    prep_path = run_dir / PREPROCESSING_FILE
    prep = Preprocessing.load(prep_path) if prep_path.is_file() else \
        Preprocessing.from_data(load_data(cfg.dataset), cfg.dataset)
    net = instantiate(cfg.model.net, num_classes=len(prep.class_names), input_shape=tuple(prep.input_shape))
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval(), prep


def predict_folder(run_dir: str | Path, folder: str | Path, out: str | Path,
                   batch_size: int = 256) -> tuple[Path, int, list[tuple[str, str]]]:
    """Classify every image under ``folder`` with the run's last model; write the CSV ``out``.

    Returns:
        ``(out, number of images labelled, [(unreadable file, reason)])``.

    Raises:
        RunFolderError: see :func:`load_predictor`.
        DatasetError: ``folder`` is not a folder or holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise DatasetError(f"{folder} holds no image files (extensions {', '.join(EXTENSIONS)})")
    net, prep = load_predictor(run_dir)
    rel = relative_files([str(f) for f in files], folder)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "confidence"])
        bad: list[tuple[str, str]] = []
        n = 0
        for s in range(0, len(files), batch_size):  # decode in chunks: memory stays flat for big folders
            x, ok, bad_chunk = prep.read_files(files[s:s + batch_size])
            bad += bad_chunk
            cls, conf = predict_pixels(net, prep, x)
            for j, c, p in zip(ok, cls, conf, strict=True):
                w.writerow([rel[s + j], prep.class_names[c], f"{p:.6f}"])
            n += len(ok)
    return out, n, bad


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
