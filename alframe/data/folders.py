"""Users' own images: a labelled folder per class (``image_folder``) or an unlabelled folder
(``unlabelled_folder``, the real annotation job).

Each image is decoded with Pillow, converted to grey or RGB, resized and centre-cropped to
``image_size`` with ``transforms.v2`` and normalised. A folder whose images fit in memory
(``cache=auto``, see :func:`alframe.data.lazy.use_cache`) is decoded once into one in-memory
tensor; a larger one is decoded on access by DataLoader worker processes (``num_workers``,
:class:`alframe.data.lazy.ImageFiles`). Either way every file is decoded once before any
training: unreadable files are reported by path, and either skipped (``skip_bad_files=true``)
or stop the run with a :class:`~alframe.errors.DatasetError` that lists them.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from alframe.data.base import ALData, TensorImageDataset, stratified_split
from alframe.data.lazy import ImageDecoder, ImageFiles, LazyImages, scan_images, use_cache
from alframe.data.transforms import channel_stats, to_float_normalised, train_transform
from alframe.errors import DatasetError

log = logging.getLogger(__name__)

#: lower-case file suffixes read as images
EXTENSIONS = tuple(sorted(IMG_EXTENSIONS))


def read_images(paths: Sequence[str | Path], channels: int = 3, image_size: int | Sequence[int] = 64,
                crop: bool = True, workers: int = 4) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Decode image files into ``[M, C, H, W] uint8`` (M = readable files).

    Each file is opened with Pillow, converted to ``L`` (``channels=1``) or ``RGB`` (3), then
    resized so its short side fits and centre-cropped (``crop=true``) or stretched to
    ``image_size``.

    Args:
        paths: image files.
        channels: 1 or 3.
        image_size: int (square) or ``[H, W]``.
        crop: keep the aspect ratio (resize + centre crop) instead of stretching.
        workers: decoding threads (Pillow releases the GIL while decoding).

    Returns:
        ``(images [M, C, H, W] uint8, ok [M] positions in paths, bad [(path, reason)])``.

    Raises:
        ValueError: ``channels`` not 1 or 3, or a bad ``image_size``.
    """
    decode = ImageDecoder(channels, image_size, crop)
    hw = decode.hw

    def one(p):
        try:
            return decode(p), None
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
            return None, f"{type(e).__name__}: {e}"

    paths = [str(p) for p in paths]
    out = torch.empty((len(paths), channels, *hw), dtype=torch.uint8)
    ok, bad = [], []
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        for i, (t, err) in enumerate(pool.map(one, paths)):
            if err is None:
                out[len(ok)] = t
                ok.append(i)
            else:
                bad.append((paths[i], err))
    return out[:len(ok)], ok, bad


def _report_bad(bad: list[tuple[str, str]], skip: bool, where: Path) -> None:
    if not bad:
        return
    listing = "; ".join(f"{p} ({why})" for p, why in bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10
                                                                  else "")
    if not skip:
        raise DatasetError(f"{len(bad)} image file(s) under {where} cannot be read: {listing}. Fix or remove "
                           "them, or set dataset.skip_bad_files=true to leave them out.")
    log.warning("skipping %d unreadable image file(s) under %s: %s", len(bad), where, listing)


def _scan_class_folders(root: Path, what: str) -> ImageFolder:
    if not root.is_dir():
        raise DatasetError(f"{what}={root} is not a folder; expected {root}/<class_name>/<image>.jpg|png "
                           "(one sub-folder of images per class)")
    try:
        return ImageFolder(str(root), loader=lambda p: p, allow_empty=True)
    except (FileNotFoundError, ValueError) as e:
        raise DatasetError(f"{what}={root}: {e} Expected {root}/<class_name>/<image>.jpg|png "
                           f"(extensions {', '.join(EXTENSIONS)})") from e


def _list_labelled(root: Path, what: str) -> ImageFolder:
    folder = _scan_class_folders(root, what)
    if not folder.samples:
        raise DatasetError(f"{what}={root}: the class folders {folder.classes} hold no image files "
                           f"(extensions {', '.join(EXTENSIONS)})")
    return folder


def _decode_all(paths, channels, image_size, crop, workers, lazy: bool, num_workers: int):
    """``(images, ok, bad)``: images a uint8 tensor ``[M, C, H, W]`` (cached) or a
    :class:`LazyImages` (checked, pixels not kept)."""
    if lazy:
        return scan_images(paths, ImageDecoder(channels, image_size, crop), num_workers)
    return read_images(paths, channels, image_size, crop, workers)


def _take(x, idx: np.ndarray):
    return x.take(idx) if isinstance(x, LazyImages) else x[torch.as_tensor(idx)]


def _as_dataset(x, y, decoder: ImageDecoder, mean, std, num_workers: int):
    """The train/test dataset over decoded (tensor) or lazy images."""
    if isinstance(x, LazyImages):
        return ImageFiles(x.paths, y, decoder, mean, std, num_workers)
    return TensorImageDataset(to_float_normalised(x, mean, std), y)


def _load_labelled(root: Path, what: str, channels, image_size, crop, workers, skip_bad_files,
                   lazy: bool = False, num_workers: int = 0, folder: ImageFolder | None = None):
    folder = folder or _list_labelled(root, what)
    paths = [p for p, _ in folder.samples]
    y = np.asarray([c for _, c in folder.samples], dtype=np.int64)
    x, ok, bad = _decode_all(paths, channels, image_size, crop, workers, lazy, num_workers)
    _report_bad(bad, skip_bad_files, root)
    if not ok:
        raise DatasetError(f"{what}={root}: none of the {len(paths)} image files could be read")
    return x, y[ok], [paths[i] for i in ok], list(folder.classes), bad


def _normalise(x_train, channels: int, normalize: bool, mean, std):
    if not normalize:
        return None, None
    if mean is not None or std is not None:
        if mean is None or std is None or len(mean) != channels or len(std) != channels:
            raise ValueError(f"dataset.mean and dataset.std must both be lists of {channels} values "
                             f"(one per channel), got mean={mean!r}, std={std!r}")
        return [float(v) for v in mean], [float(v) for v in std]
    return x_train.channel_stats() if isinstance(x_train, LazyImages) else channel_stats(x_train)


def image_folder(root: str | Path, name: str = "image_folder", test_root: str | Path | None = None,
                 test_size: int | float = 0.2, val_size: int = 0, split_seed: int = 0,
                 image_size: int | Sequence[int] = 64, channels: int = 3, crop: bool = True,
                 normalize: bool = True, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 skip_bad_files: bool = False, augment=None, workers: int = 4, cache: str | bool = "auto",
                 cache_max_gb: float | None = None, num_workers: int = 0) -> ALData:
    """A labelled image folder ``root/<class_name>/*.jpg|png`` (torchvision ``ImageFolder``).

    Class names are the sub-folder names (sorted); they appear in queries.csv, the logs and the
    oracles' pages. The stored labels (folder names) act as ``targets`` for simulated oracles.

    Args:
        root: the folder of class folders.
        name: dataset name for tags and logs.
        test_root: a separate folder with the same class folders used as the test set; without
            it a stratified, seeded ``test_size`` part of ``root`` is the test set.
        test_size: test samples (int) or fraction (float in (0, 1)) when ``test_root`` is None.
        val_size: validation samples held out of the train source (stratified; 0 = none).
        split_seed: seed of the test and validation splits.
        image_size: int (square) or ``[H, W]`` the model sees.
        channels: 1 (grey) or 3 (RGB).
        crop: keep the aspect ratio (resize short side + centre crop) instead of stretching.
        normalize: per-channel normalisation (``transforms.v2.Normalize``) with ``mean``/``std``,
            by default the train source's own statistics.
        mean, std: per-channel statistics to use instead (e.g. ImageNet's for pretrained nets).
        skip_bad_files: leave unreadable/corrupt files out (each reported by path) instead of
            stopping with an error.
        augment: ``transforms.v2`` list for labelled training batches only.
        workers: decoding threads of the in-memory (cached) load.
        cache: ``auto`` (in memory when the float32 images fit in ``cache_max_gb``), ``true``
            (always in memory) or ``false`` (decode on access, :class:`~alframe.data.lazy.ImageFiles`).
        cache_max_gb: GiB the cache may take with ``cache=auto`` (None: half the memory available).
        num_workers: DataLoader worker processes that decode a lazy folder (the check before
            training, scoring, training, evaluation); 0 = the main process.

    Returns:
        ALData with images ``[channels, H, W] float32``; ``extras["paths"]`` (train source file
        of each index; ``extras["files"]`` the same relative to ``root``), ``extras["test_paths"]`` and ``extras["skipped"]`` ([(path, reason)]).

    Raises:
        DatasetError: missing folder, no class folders or images, unreadable files (unless
            skipped), or a ``test_root`` whose classes differ.
        ValueError: bad sizes (e.g. a class too small to stratify).
    """
    root = Path(str(root)).expanduser()
    decoder = ImageDecoder(channels, image_size, crop)
    folder = _list_labelled(root, "dataset.root")
    test_folder = None
    if test_root is not None:
        test_root = Path(str(test_root)).expanduser()
        test_folder = _list_labelled(test_root, "dataset.test_root")
    n_files = len(folder.samples) + (len(test_folder.samples) if test_folder is not None else 0)
    lazy = not use_cache(cache, n_files, channels, decoder.hw, cache_max_gb)
    x, y, paths, classes, bad = _load_labelled(root, "dataset.root", channels, image_size, crop, workers,
                                               skip_bad_files, lazy, num_workers, folder)
    if test_root is not None:
        x_te, y_te, test_paths, test_classes, bad_te = _load_labelled(test_root, "dataset.test_root", channels,
                                                                      image_size, crop, workers, skip_bad_files,
                                                                      lazy, num_workers, test_folder)
        if test_classes != classes:
            raise DatasetError(f"dataset.test_root={test_root} has classes {test_classes}, but dataset.root has "
                               f"{classes}: both need the same class folders")
        bad = bad + bad_te
        x_tr, y_tr, train_paths = x, y, paths
    else:
        try:
            tr, te = stratified_split(y, test_size, split_seed)
        except ValueError as e:
            raise ValueError(f"dataset.test_size={test_size} cannot split {len(y)} images of {len(classes)} "
                             f"classes (class counts {np.bincount(y, minlength=len(classes)).tolist()}): {e}") from e
        x_tr, y_tr, x_te, y_te = _take(x, tr), y[tr], _take(x, te), y[te]
        train_paths, test_paths = [paths[i] for i in tr], [paths[i] for i in te]
    if not 0 <= int(val_size) <= len(y_tr) - 2:
        raise ValueError(f"dataset.val_size must lie in [0, {len(y_tr) - 2}] ({len(y_tr)} training images), "
                         f"got {val_size}")
    try:
        val_idx = stratified_split(y_tr, int(val_size), split_seed + 1)[1] if val_size else np.empty(0, np.int64)
    except ValueError as e:
        raise ValueError(f"dataset.val_size={val_size} cannot be stratified over {len(classes)} classes: {e}") from e
    m, s = _normalise(x_tr, channels, normalize, mean, std)
    train = _as_dataset(x_tr, y_tr, decoder, m, s, num_workers)
    test = _as_dataset(x_te, y_te, decoder, m, s, num_workers)
    return ALData(
        name=name, train=train, test=test, val_idx=val_idx, num_classes=len(classes), class_names=classes,
        input_shape=(channels, *decoder.hw), targets=y_tr, train_transform=train_transform(augment, m, s),
        extras={"mean": m, "std": s, "paths": train_paths, "test_paths": test_paths, "skipped": bad,
                "root": str(root), "files": relative_files(train_paths, root), "cached": not lazy,
                "file_digests": file_digests(train_paths, root)},
    )


def relative_files(paths: Sequence[str], root: Path) -> list[str]:
    """``paths`` relative to ``root`` (``/``-separated); a file outside ``root`` keeps its absolute path."""
    base = Path(root).resolve()
    out = []
    for p in paths:
        q = Path(p).resolve()
        out.append(q.relative_to(base).as_posix() if q.is_relative_to(base) else q.as_posix())
    return out


def file_digests(paths: Sequence[str], root: Path) -> dict[str, str]:
    """``{path relative to root: BLAKE2b-128 of the file's bytes}`` for the train source: the
    dataset fingerprint covers which images a run's indices point at, so a replaced, added or
    removed file is noticed on resume (:func:`alframe.rundir.resume.check_same_data`).

    Raises:
        OSError: a file cannot be read.
    """
    out = {}
    for rel, p in zip(relative_files(paths, root), paths, strict=True):
        h = hashlib.blake2b(digest_size=16)
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[rel] = h.hexdigest()
    return out


def sample_files(data: ALData) -> list[str] | None:
    """File of each train-source sample relative to the dataset root (``extras["files"]``, set by
    the folder loaders), index-aligned with ``data.train``; None for datasets not read from files."""
    return data.extras.get("files")


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def read_seed_labels(path: Path, root: Path, files: list[str], classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Seed labels from a CSV with columns ``file,label``.

    ``file`` is relative to ``root`` (or absolute); ``label`` a class name from ``classes`` or
    its index.

    Returns:
        ``(idx [S] int64, labels [S] int64)`` into ``files``.

    Raises:
        DatasetError: missing file or columns, an unknown image or class, or one image
            labelled twice with different classes (names the row).
    """
    if not path.is_file():
        raise DatasetError(f"dataset.seed_labels={path} does not exist (expected a CSV with columns file,label)")
    where = {str(Path(f).resolve()): i for i, f in enumerate(files)}
    lookup = {c: i for i, c in enumerate(classes)}
    idx, labels = {}, {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"dataset.seed_labels={path}: needs a header with columns 'file' and 'label', "
                               f"got {reader.fieldnames}")
        for n, row in enumerate(reader, start=2):
            p = Path(row["file"].strip())
            key = str((p if p.is_absolute() else root / p).resolve())
            if key not in where:
                raise DatasetError(f"dataset.seed_labels={path} line {n}: {row['file']!r} is not a readable image "
                                   f"under {root}")
            raw = row["label"].strip()
            if raw in lookup:
                y = lookup[raw]
            elif raw.isdigit() and int(raw) < len(classes):
                y = int(raw)
            else:
                raise DatasetError(f"dataset.seed_labels={path} line {n}: label {raw!r} is not one of the "
                                   f"classes {classes} (or an index 0..{len(classes) - 1})")
            i = where[key]
            if i in labels and labels[i] != y:
                raise DatasetError(f"dataset.seed_labels={path} line {n}: {row['file']!r} was already labelled "
                                   f"{classes[labels[i]]!r}, now {classes[y]!r}")
            idx[i], labels[i] = i, y
    order = sorted(idx)
    return np.asarray(order, dtype=np.int64), np.asarray([labels[i] for i in order], dtype=np.int64)


def unlabelled_folder(root: str | Path, classes: Sequence[str], name: str = "unlabelled_folder",
                      seed_labels: str | Path | None = None, test_root: str | Path | None = None,
                      image_size: int | Sequence[int] = 64, channels: int = 3, crop: bool = True,
                      normalize: bool = True, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, skip_bad_files: bool = False, augment=None,
                      workers: int = 4, cache: str | bool = "auto", cache_max_gb: float | None = None,
                      num_workers: int = 0) -> ALData:
    """An unlabelled image folder: the pool of a real annotation job.

    Every image file under ``root`` (searched recursively, sorted by path) is a pool sample;
    the class list comes from the config. No labels are stored: ``targets`` is None and the
    train source's own labels are all -1, so only a human oracle can label (``oracle=stored``
    refuses at setup). Labels already given, from the optional ``seed_labels`` CSV
    (``file,label``), are ``extras["seed_idx"] [S]`` with ``extras["seed_labels"] [S]``.

    Args:
        root: folder of images (any sub-folder layout).
        classes: the class names a person may choose from (at least 2).
        name: dataset name for tags and logs.
        seed_labels: optional CSV of labels already given.
        test_root: optional labelled folder ``test_root/<class>/*`` (class folders named as in
            ``classes``) used to measure accuracy; without it the test set is empty.
        image_size, channels, crop, normalize, mean, std, skip_bad_files, augment, workers, cache,
            cache_max_gb, num_workers: as for :func:`image_folder`.

    Returns:
        ALData with ``targets=None``, no validation split, ``extras["paths"]`` (file of each index;
        ``extras["files"]`` the same relative to ``root``).

    Raises:
        DatasetError: missing folder, no images, unreadable files (unless skipped), bad seed
            labels, or ``test_root`` class folders that are not in ``classes``.
        ValueError: fewer than 2 classes or duplicate class names.
    """
    classes = [str(c) for c in (classes or [])]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"dataset.classes must list at least 2 distinct class names, got {classes}")
    root = Path(str(root)).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset.root={root} is not a folder of images")
    files = _image_files(root)
    if not files:
        raise DatasetError(f"dataset.root={root} holds no image files (extensions {', '.join(EXTENSIONS)})")
    decoder = ImageDecoder(channels, image_size, crop)
    test_folder = None
    if test_root is not None:
        test_root = Path(str(test_root)).expanduser()
        test_folder = _list_labelled(test_root, "dataset.test_root")
    n_files = len(files) + (len(test_folder.samples) if test_folder is not None else 0)
    lazy = not use_cache(cache, n_files, channels, decoder.hw, cache_max_gb)
    x, ok, bad = _decode_all(files, channels, image_size, crop, workers, lazy, num_workers)
    _report_bad(bad, skip_bad_files, root)
    if not ok:
        raise DatasetError(f"dataset.root={root}: none of the {len(files)} image files could be read")
    paths = [str(files[i]) for i in ok]
    seed_idx = np.empty(0, np.int64)
    seed_y = np.empty(0, np.int64)
    if seed_labels is not None:
        seed_idx, seed_y = read_seed_labels(Path(str(seed_labels)).expanduser(), root, paths, classes)
    m, s = _normalise(x, channels, normalize, mean, std)
    train = _as_dataset(x, None, decoder, m, s, num_workers)  # no stored labels: y all -1
    test_paths: list[str] = []
    if test_root is not None:
        x_te, y_te, test_paths, test_classes, bad_te = _load_labelled(test_root, "dataset.test_root", channels,
                                                                      image_size, crop, workers, skip_bad_files,
                                                                      lazy, num_workers, test_folder)
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DatasetError(f"dataset.test_root={test_root} has class folders {unknown} that are not in "
                               f"dataset.classes {classes}")
        y_te = np.asarray([classes.index(test_classes[c]) for c in y_te], dtype=np.int64)
        test = _as_dataset(x_te, y_te, decoder, m, s, num_workers)
        bad = bad + bad_te
    else:
        test = TensorImageDataset(torch.empty((0, channels, *decoder.hw)), np.empty(0, np.int64))
    return ALData(
        name=name, train=train, test=test, val_idx=np.empty(0, np.int64), num_classes=len(classes),
        class_names=classes, input_shape=(channels, *decoder.hw), targets=None,
        train_transform=train_transform(augment, m, s),
        extras={"mean": m, "std": s, "paths": paths, "test_paths": test_paths, "skipped": bad,
                "seed_idx": seed_idx, "seed_labels": seed_y, "root": str(root),
                "files": relative_files(paths, root), "cached": not lazy, "file_digests": file_digests(paths, root)},
    )
