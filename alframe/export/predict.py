"""``alframe-predict RUN_DIR FOLDER``: label a folder of new images with a run's last model.

Every image file under ``FOLDER`` (any sub-folders, sorted by path) is decoded as the run's
training images were (channels, image size, crop; ``preprocessing.json`` of the run), normalised
with the run's statistics and classified by ``last_model.pt``. The result is a CSV with columns
``file,label,confidence`` (``file`` relative to ``FOLDER``, ``label`` the class name,
``confidence`` the arg-max softmax probability). Unreadable files are listed on stderr and left out.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from hydra.utils import instantiate

from alframe.data.base import load_data
from alframe.data.folders import EXTENSIONS, relative_files
from alframe.errors import DatasetError, RunFolderError
from alframe.export.mlmodel import PREPROCESSING_FILE, Preprocessing, predict_pixels
from alframe.export.runfolder import MODEL_FILE, read_config
from alframe.models.base import ALNet


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




