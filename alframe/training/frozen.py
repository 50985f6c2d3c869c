"""Frozen backbone, head-only rounds: with ``model.backbone`` set, the run's data becomes the
backbone's features, computed once per run and cached in the run folder.

The backbone (:mod:`alframe.models.backbone`) runs once over the train source and the test set;
the features are written to ``<run_dir>/features/{train,test}.npz`` (``x [N, D] float32``,
``y [N] int64``, the fingerprints) and every round then trains only ``model.net`` (a
:class:`~alframe.models.head.FeatureHead`) on them through the usual Lightning ``fit``. Scoring,
MC dropout and every strategy read the same features: the run's :class:`ALData` holds them.

The cache is used only when its fingerprints match: the backbone's (architecture, weights,
preprocessing) and the data's (the dataset fingerprint and the content of in-memory images). A
missing or unreadable cache is computed again (the features are a fixed function of both); a
cache of another backbone or other data is refused, never used. The cache files are valid
``dataset=features`` files.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from alframe import progress
from alframe.data.base import ALData, IndexedImages, batches, make_loader
from alframe.data.features import check_features, check_labels, feature_data
from alframe.errors import ConfigError, DatasetError, StateMismatchError
from alframe.models.backbone import FrozenBackbone, build_backbone
from alframe.rundir.state import atomic_write

CACHE_DIR = "features"
#: bump when the cache's content changes meaning
FORMAT = "1"


def has_backbone(cfg: DictConfig) -> bool:
    """True when ``model.backbone`` is set (a frozen backbone, head-only rounds)."""
    return OmegaConf.select(cfg, "model.backbone") is not None


def data_fingerprint(data: ALData) -> str:
    """The images' identity: ``data.fingerprint`` and, for in-memory images, their bytes."""
    h = hashlib.sha1(data.fingerprint.encode())
    for ds in (data.train, data.test):
        x = getattr(ds, "x", None)
        if isinstance(x, torch.Tensor):
            h.update(x.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def extract(backbone: FrozenBackbone, dataset, batch_size: int = 512,
            device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The backbone's features of every sample of ``dataset``.

    Returns:
        ``(features [N, D] float32, labels [N] int64)``: the labels the dataset stores (-1 unknown).

    Raises:
        ConfigError: the backbone gives NaN/inf features.
    """
    backbone.to(device)
    xs, ys = [], []
    for batch in batches(make_loader(IndexedImages(dataset), batch_size=batch_size)):
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        xs.append(backbone(x.to(device)).cpu())
        ys.append(torch.full((len(x),), -1, dtype=torch.long) if y is None else torch.as_tensor(y).long())
    backbone.cpu()
    x = torch.cat(xs).numpy() if xs else np.empty((0, 0), np.float32)
    try:
        x = check_features(x, "the backbone's output", "model.backbone")
    except DatasetError as e:
        raise ConfigError(str(e)) from e
    return x, torch.cat(ys).numpy().astype(np.int64)


def _write(path: Path, x: np.ndarray, y: np.ndarray, fps: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, x=x, y=y, **{k: np.array(v) for k, v in fps.items()}))


def _read(path: Path, fps: dict[str, str], n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached ``(x, y)`` of ``path``; None when missing or unreadable.

    Raises:
        StateMismatchError: the cache belongs to another backbone or other data.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = {k: str(z[k]) for k in fps if k in z.files}
            if saved != fps:
                what = [k.replace("_fingerprint", "") for k in fps if saved.get(k) != fps[k]]
                raise StateMismatchError(
                    f"{path} was computed for another {' and '.join(what)} (saved {saved}, this run: {fps}): it is "
                    "not used. A run folder's features belong to its backbone and data: restore them (e.g. the "
                    f"checkpoint file), or start a new run; delete {path.parent} to recompute them")
            x = check_features(z["x"], path, "feature cache")
            y = check_labels(z["y"] + 1, len(x), num_classes + 1, path, "feature cache") - 1  # -1 = unknown
    except StateMismatchError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # a torn or edited file: computed again
        progress.console.print(f"features: {path} is unreadable ({type(e).__name__}: {e}); computing it again")
        return None
    if len(x) != n:
        progress.console.print(f"features: {path} has {len(x)} rows, the data {n}; computing it again")
        return None
    return x, y


def check_no_augment(data: ALData) -> None:
    """Raises ConfigError: ``dataset.augment`` with a backbone (features are computed once per run)."""
    if data.train_transform is not None:
        raise ConfigError("dataset.augment cannot be used with model.backbone: the features are computed once per "
                          "run, so training images are never augmented; set dataset.augment=null")


def frozen_data(cfg: DictConfig, data: ALData, run_dir: Path, device: str | torch.device = "cpu",
                backbone: FrozenBackbone | None = None) -> ALData:
    """``data`` as the features of ``model.backbone`` (``data`` itself when there is none).

    Computed once: read back from ``<run_dir>/features/`` when its fingerprints match, else the
    backbone runs over the train source and the test set and the cache is written.

    Args:
        device: where the backbone runs.
        backbone: the built backbone (None: built from ``model.backbone``).

    Returns:
        ALData with ``[D]`` float32 samples, the same indices, validation split, classes,
        targets and fingerprint as ``data``; standardised when ``model.backbone.standardize``.
        ``extras["features"]`` records the cache folder and fingerprints.

    Raises:
        ConfigError: a bad ``model.backbone`` (one line), or ``dataset.augment`` (features are
            computed once, so images cannot be augmented per round).
        StateMismatchError: the run folder's cache belongs to another backbone or other data.
    """
    if not has_backbone(cfg):
        return data
    spec = OmegaConf.to_container(cfg.model.backbone, resolve=True)
    check_no_augment(data)
    if backbone is None:
        backbone = build_backbone(spec, data.num_classes, data.input_shape, data.extras.get("mean"),
                                  data.extras.get("std"))
    folder = Path(run_dir) / CACHE_DIR
    (x_tr, y_tr), (x_te, y_te), fps = cached_features(backbone, data, folder, int(cfg.loop.eval_batch_size), device)
    return feature_data(data.name, x_tr, data.targets if data.targets is not None else y_tr, x_te, y_te,
                        data.val_idx, data.num_classes, data.class_names, bool(spec.get("standardize", True)),
                        data.fingerprint, {**data.extras, "features": {"folder": str(folder), **fps}})


def cached_features(backbone: FrozenBackbone, data: ALData, folder: Path, batch_size: int = 512,
                    device: str | torch.device = "cpu"):
    """The backbone's features of ``data.train`` and ``data.test``: read from ``folder/{train,test}.npz``
    when their fingerprints match, else computed and written there (atomically).

    Returns:
        ``((x_train [N, D] float32, y_train [N] int64), (x_test [M, D], y_test [M]), fingerprints)``;
        labels are those the datasets store (-1 unknown).

    Raises:
        StateMismatchError: a file in ``folder`` belongs to another backbone or other data.
    """
    fps = {"backbone_fingerprint": backbone.fingerprint(), "data_fingerprint": data_fingerprint(data),
           "format": FORMAT}
    folder, c = Path(folder), data.num_classes
    train = _read(folder / "train.npz", fps, len(data.train), c)
    test = _read(folder / "test.npz", fps, len(data.test), c)
    if train is None or test is None:
        t0 = time.perf_counter()
        with progress.status(f"features: {backbone.identity['arch']} over {len(data.train)} + {len(data.test)} "
                             "samples (once per run)"):
            train, test = (extract(backbone, ds, batch_size, device) for ds in (data.train, data.test))
        _write(folder / "train.npz", *train, fps)
        _write(folder / "test.npz", *test, fps)
        progress.console.print(f"features: {train[0].shape[1]} per sample from {backbone.identity['arch']}, "
                               f"computed in {time.perf_counter() - t0:.1f} s, cached in {folder}", style="dim")
    return train, test, fps
