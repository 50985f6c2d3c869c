"""Feature vectors as a dataset: ``dataset=features``, features computed elsewhere (CLIP, DINOv2,
a network alframe trained) and the feature cache of a frozen backbone
(:mod:`alframe.training.frozen`).

One file per split, ``.npz`` or ``.npy``, read with ``allow_pickle=False`` and checked as
untrusted input: every problem is a :class:`~alframe.errors.DatasetError` of one line naming the
key, the file and what was expected.

- ``.npz``: the features under ``x`` (or ``features``), ``[N, D]``, any real number type (held as
  float32); integer labels ``[N]`` under ``y`` (or ``labels``); optionally ``class_names`` ``[C]``
  (strings).
- ``.npy``: the features alone; the labels in ``<stem>_labels.npy`` beside it, or the file named
  by ``dataset.train_labels`` / ``dataset.test_labels``.
"""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from alframe.data.base import ALData, Stacked, TensorImageDataset, stratified_split
from alframe.errors import DatasetError

FEATURE_KEYS = ("x", "features")
LABEL_KEYS = ("y", "labels")


class TensorFeatureDataset(TensorImageDataset):
    """In-memory feature vectors ``x: [N, D] float32`` and labels ``y: [N] int64`` (-1 = unknown),
    fetched a batch at a time like :class:`~alframe.data.base.TensorImageDataset`."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | np.ndarray | None = None):
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {tuple(x.shape)}")
        self.x = x.contiguous()
        self.y = torch.full((len(x),), -1, dtype=torch.long) if y is None else torch.as_tensor(np.asarray(y),
                                                                                                 dtype=torch.long)
        if len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __getitems__(self, idx: Sequence[int]):
        t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return [Stacked((self.x[t], self.y[t]))]


@contextlib.contextmanager
def _read_errors(pickled: str, unreadable: str):
    """numpy's read errors as one DatasetError line: ``pickled`` for an object array (refused with
    ``allow_pickle=False``), else ``unreadable`` with the cause."""
    try:
        yield
    except ValueError as e:
        raise DatasetError(pickled if "allow_pickle" in str(e) else f"{unreadable} ({e})") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{unreadable} ({type(e).__name__}: {e})") from e


def _load(path: Path, what: str):
    """``np.load`` without pickles; a broken or pickled file is one DatasetError line."""
    with path.open("rb") as f:
        head = f.read(6)
    if head[:1] == b"\x80":
        raise DatasetError(f"{what}={path} is a Python pickle, which alframe does not load (allow_pickle=False): "
                           "save plain numeric arrays with np.save / np.savez")
    if head != b"\x93NUMPY" and head[:4] != b"PK\x03\x04":
        raise DatasetError(f"{what}={path} is not a readable .npy/.npz file (it starts with {head!r})")
    with _read_errors(f"{what}={path} holds a pickled object array, which alframe does not load "
                      "(allow_pickle=False): save plain numeric arrays, e.g. x.astype(np.float32)",
                      f"{what}={path} is not a readable .npy/.npz file"):
        return np.load(path, allow_pickle=False)


def _member(npz, key: str, path: Path, what: str) -> np.ndarray:
    with _read_errors(f"{what}={path}: array {key!r} is a pickled object array, which alframe does not "
                      "load (allow_pickle=False): save plain numeric arrays", f"{what}={path}: array {key!r} is unreadable"):
        return npz[key]


def _pick(names: Sequence[str], keys: tuple[str, ...], path: Path, what: str, kind: str) -> str | None:
    found = [k for k in keys if k in names]
    if len(found) > 1:
        raise DatasetError(f"{what}={path} has both {found[0]!r} and {found[1]!r}: keep one array of {kind}")
    return found[0] if found else None


def check_features(x: np.ndarray, path: Path | str, what: str) -> np.ndarray:
    """``x`` as C-contiguous float32 ``[N, D]``, or a DatasetError naming the problem.

    Raises:
        DatasetError: not 2-D, empty, not a real number type, or NaN/inf (also values beyond
            float32's range).
    """
    if x.ndim != 2:
        raise DatasetError(f"{what}={path}: features must be a 2-D array [N, D] (a row per sample), got shape "
                           f"{tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DatasetError(f"{what}={path}: features are empty (shape {tuple(x.shape)})")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DatasetError(f"{what}={path}: features have dtype {x.dtype}: need real numbers (float32 is best)")
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise DatasetError(f"{what}={path}: features hold {int(bad.sum())} NaN/inf values (first in row {row}; "
                           "values beyond float32's range count too): fix or drop those rows")
    return x


def check_labels(y: np.ndarray, n: int, num_classes: int | None, path: Path | str, what: str) -> np.ndarray:
    """``y`` as int64 ``[N]`` in ``[0, num_classes)`` (``num_classes`` None: any ``>= 0``).

    Raises:
        DatasetError: wrong shape or length, not integers, or a label out of range.
    """
    if y.ndim != 1 or len(y) != n:
        raise DatasetError(f"{what}={path}: labels must be a 1-D array with one entry per row of the features "
                           f"({n}), got shape {tuple(y.shape)}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{what}={path}: labels have dtype {y.dtype}: need integer class indices "
                           "(y.astype(np.int64) if they are whole numbers)")
    y = y.astype(np.int64)
    out = (y < 0) if num_classes is None else ((y < 0) | (y >= num_classes))
    if out.any():
        row = int(np.argmax(out))
        allowed = ">= 0" if num_classes is None else f"in [0, {num_classes})"
        raise DatasetError(f"{what}={path}: label {int(y[row])} at row {row} is out of range: class indices must be "
                           f"{allowed} ({int(out.sum())} labels out of range)")
    return y


def read_split(path: str | Path | None, labels: str | Path | None, what: str,
               num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """One split's file, checked.

    Args:
        path: the ``.npz`` or ``.npy`` file.
        labels: a ``.npy`` of labels (None: inside the ``.npz``, or ``<stem>_labels.npy`` beside a ``.npy``).
        what: the config key named in messages (``dataset.train``).
        num_classes: labels must be below it (None: only ``>= 0``).

    Returns:
        ``(features [N, D] float32, labels [N] int64 or None when the file has none,
        class names [C] or None)``.

    Raises:
        DatasetError: one line per problem (missing file, pickled or unreadable array, wrong
            shape or dtype, NaN/inf, labels out of range).
    """
    if path is None or str(path) == "":
        raise DatasetError(f"{what} is missing: give a .npz (x [N, D], y [N]) or .npy file of features")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{what}={path} does not exist")
    if path.suffix not in (".npz", ".npy"):
        raise DatasetError(f"{what}={path}: expected a .npz or .npy file, got {path.suffix or 'no suffix'!r}")
    names = None
    y = None
    got = _load(path, what)
    if isinstance(got, np.lib.npyio.NpzFile):
        with got:
            fk = _pick(got.files, FEATURE_KEYS, path, what, "features")
            if fk is None:
                raise DatasetError(f"{what}={path} has arrays {sorted(got.files)}: name the features 'x' (or "
                                   "'features') and the labels 'y' (or 'labels')")
            x = _member(got, fk, path, what)
            lk = _pick(got.files, LABEL_KEYS, path, what, "labels")
            y = _member(got, lk, path, what) if lk is not None and labels is None else None
            if "class_names" in got.files:
                cn = _member(got, "class_names", path, what)
                if cn.ndim != 1 or cn.dtype.kind != "U":
                    raise DatasetError(f"{what}={path}: class_names must be a 1-D array of strings, got "
                                       f"{cn.dtype} {tuple(cn.shape)}")
                names = [str(c) for c in cn]
    else:
        x = got
    x = check_features(x, path, what)
    if y is None:
        beside = path.with_name(f"{path.stem}_labels.npy")
        lpath = Path(labels).expanduser() if labels else (beside if path.suffix == ".npy" and beside.is_file() else None)
        if labels and not lpath.is_file():
            raise DatasetError(f"{what}_labels={lpath} does not exist")
        if lpath is not None:
            y = _load(lpath, f"{what}_labels")
            if not isinstance(y, np.ndarray):
                raise DatasetError(f"{what}_labels={lpath}: expected a .npy array of labels, got a .npz archive")
            path = lpath
    if y is not None:
        y = check_labels(y, len(x), num_classes, path, what)
    return x, y, names


def features(train: str, test: str, train_labels: str | None = None, test_labels: str | None = None,
             num_classes: int | None = None, class_names: list[str] | None = None, val_size: int = 100,
             split_seed: int = 0, normalize: bool = True, name: str = "features") -> ALData:
    """Features computed elsewhere as an :class:`ALData` (``dataset=features``).

    Args:
        train: the train source's file (pool, labelled set and validation split).
        test: the test split's file (never part of the pool).
        train_labels, test_labels: separate label files (see :func:`read_split`).
        num_classes: C; None: the largest train label + 1.
        class_names: ``[C]`` names; None: the files' ``class_names`` or ``"0".."C-1"``.
        val_size: samples of the train source held out for validation (stratified, seeded).
        split_seed: seed of the validation split.
        normalize: standardise each feature with the train source's mean and std.
        name: dataset name for tags and logs.

    Returns:
        ALData with train/test :class:`TensorFeatureDataset` (``[D]`` float32 per sample),
        ``input_shape = (D,)``, the train labels as ``targets`` (stored oracle) and a fingerprint
        of the file contents.

    Raises:
        DatasetError: a file or value the checks refuse (one line each).
    """
    if num_classes is not None and int(num_classes) < 2:
        raise DatasetError(f"dataset.num_classes={num_classes} is invalid: must be >= 2 or null")
    x_tr, y_tr, names = read_split(train, train_labels, "dataset.train", num_classes)
    if y_tr is None:
        raise DatasetError(f"dataset.train={train} has no labels (no 'y' in the .npz, no _labels.npy beside it): "
                           "the stored oracle answers from them")
    c = int(num_classes) if num_classes is not None else int(y_tr.max()) + 1
    x_te, y_te, _ = read_split(test, test_labels, "dataset.test", c)
    if y_te is None:
        raise DatasetError(f"dataset.test={test} has no labels (no 'y' in the .npz, no _labels.npy beside it): "
                           "test accuracy needs them")
    if x_te.shape[1] != x_tr.shape[1]:
        raise DatasetError(f"dataset.test={test} has {x_te.shape[1]} features per row but dataset.train has "
                           f"{x_tr.shape[1]}: both splits must come from the same feature extractor")
    names = list(class_names) if class_names is not None else names or [str(i) for i in range(c)]
    if len(names) != c:
        raise DatasetError(f"dataset class names ({len(names)}) do not match the {c} classes of the labels")
    if not 0 <= int(val_size) <= len(x_tr) - c:
        raise DatasetError(f"dataset.val_size={val_size} is invalid: must lie in [0, {len(x_tr) - c}] for "
                           f"{len(x_tr)} train rows")
    _, val_idx = stratified_split(y_tr, int(val_size), split_seed) if val_size else (None, np.empty(0, np.int64))
    h = hashlib.sha1(f"features|{name}|{c}|{normalize}|{val_size}|{split_seed}".encode())
    for a in (x_tr, y_tr, x_te, y_te):
        h.update(np.ascontiguousarray(a).tobytes())
    return feature_data(name, x_tr, y_tr, x_te, y_te, val_idx, c, names, normalize, h.hexdigest()[:16])


def feature_data(name: str, x_train: np.ndarray, y_train: np.ndarray | None, x_test: np.ndarray, y_test: np.ndarray,
                 val_idx: np.ndarray, num_classes: int, class_names: list[str], normalize: bool, fingerprint: str,
                 extras: dict | None = None) -> ALData:
    """An :class:`ALData` of checked feature arrays.

    Args:
        x_train: ``[N, D] float32`` train source; ``y_train``: ``[N] int64`` stored labels
            (-1 unknown) or None.
        x_test: ``[M, D] float32``; ``y_test``: ``[M] int64``.
        val_idx: ``[V] int`` validation rows of the train source.
        normalize: standardise each feature with the train source's mean and std (float64
            statistics, std at least 1e-6), recorded as ``extras["mean"]``/``["std"]`` (``[D]``).
        fingerprint: the data's identity (saved with the pool state).
        extras: more ``ALData.extras`` (e.g. the image dataset's file list).
    """
    mean = std = None
    if normalize:
        mean = x_train.mean(axis=0, dtype=np.float64)
        std = np.maximum(x_train.std(axis=0, dtype=np.float64), 1e-6)
        x_train = ((x_train - mean) / std).astype(np.float32)
        x_test = ((x_test - mean) / std).astype(np.float32)
    targets = None if y_train is None or (np.asarray(y_train) < 0).all() else np.asarray(y_train, dtype=np.int64)
    return ALData(
        name=name, train=TensorFeatureDataset(torch.from_numpy(np.ascontiguousarray(x_train)), y_train),
        test=TensorFeatureDataset(torch.from_numpy(np.ascontiguousarray(x_test)), y_test), val_idx=val_idx,
        num_classes=int(num_classes), class_names=list(class_names), input_shape=(int(x_train.shape[1]),),
        targets=targets, fingerprint=fingerprint,
        extras={**(extras or {}), "mean": None if mean is None else mean.tolist(),
                "std": None if std is None else std.tolist()})
