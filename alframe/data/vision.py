"""The torchvision benchmarks: MNIST, Fashion-MNIST, KMNIST, EMNIST, CIFAR-10/100, SVHN.

Files are read (and, with ``download=true``, fetched) by torchvision's own dataset classes;
the images are then held in memory as one normalised float tensor
(:class:`~alframe.data.base.TensorImageDataset`), so a batch costs one tensor index.

Splits: the dataset's official test split is the test set (never part of the pool); a
stratified, seeded validation split of ``val_size`` samples is held out of the official
training split; the rest is the pool. ``train_size``/``test_size`` take stratified, seeded
subsets for quick runs. ``repeat=3`` turns the MNIST family into Repeated MNIST (BatchBALD):
see :func:`repeat_with_noise`.
"""

from __future__ import annotations

import inspect
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tvd

from alframe.data.base import ALData, TensorImageDataset, stratified_split
from alframe.data.transforms import channel_stats, to_float_normalised, train_transform
from alframe.errors import DatasetError


@dataclass(frozen=True)
class VisionSpec:
    """How to open one torchvision dataset and where its files live.

    Attributes:
        cls: the torchvision dataset class.
        folder: folder under ``root`` holding the files (``""`` = ``root`` itself).
        train_files / test_files: the files torchvision reads (relative to ``folder``).
        layout: how ``.data`` is laid out: ``"NHW"`` (grey), ``"NHWC"`` or ``"NCHW"``.
        source: where the files come from (shown in the missing-files error).
        kwargs: extra constructor arguments (e.g. EMNIST's ``split``).
        split_arg: True when the class takes ``split="train"|"test"`` instead of ``train=``.
        classes: display names; None = the class's own ``classes`` attribute.
        transpose: swap H and W (EMNIST's files store images transposed).
        checksum_attrs: class attributes whose md5 entries are cleared when
            ``verify_checksums=false``.
    """

    cls: type
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    layout: str
    source: str
    kwargs: dict = field(default_factory=dict)
    split_arg: bool = False
    classes: tuple[str, ...] | None = None
    transpose: bool = False
    checksum_attrs: tuple[str, ...] = ()


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_DIGITS = tuple(string.digits)
_EMNIST_BALANCED = tuple(sorted(set(string.digits + string.ascii_letters) - set("cijklmopsuvwxyz")))

SPECS: dict[str, VisionSpec] = {
    "mnist": VisionSpec(tvd.MNIST, "MNIST/raw", _IDX, _IDX_TEST, "NHW",
                        "http://yann.lecun.com/exdb/mnist/ (torchvision mirrors)", classes=_DIGITS),
    "fashion_mnist": VisionSpec(tvd.FashionMNIST, "FashionMNIST/raw", _IDX, _IDX_TEST, "NHW",
                                "https://github.com/zalandoresearch/fashion-mnist"),
    "kmnist": VisionSpec(tvd.KMNIST, "KMNIST/raw", _IDX, _IDX_TEST, "NHW", "https://github.com/rois-codh/kmnist"),
    "emnist": VisionSpec(tvd.EMNIST, "EMNIST/raw",
                         ("emnist-balanced-train-images-idx3-ubyte", "emnist-balanced-train-labels-idx1-ubyte"),
                         ("emnist-balanced-test-images-idx3-ubyte", "emnist-balanced-test-labels-idx1-ubyte"),
                         "NHW", "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip (unpack the balanced "
                         "split's .gz files)", kwargs={"split": "balanced"}, classes=_EMNIST_BALANCED,
                         transpose=True),
    "cifar10": VisionSpec(tvd.CIFAR10, "cifar-10-batches-py",
                          tuple(f"data_batch_{i}" for i in range(1, 6)) + ("batches.meta",),
                          ("test_batch", "batches.meta"), "NHWC",
                          "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpacked)",
                          checksum_attrs=("train_list", "test_list", "meta")),
    "cifar100": VisionSpec(tvd.CIFAR100, "cifar-100-python", ("train", "meta"), ("test", "meta"), "NHWC",
                           "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (unpacked)",
                           checksum_attrs=("train_list", "test_list", "meta")),
    "svhn": VisionSpec(tvd.SVHN, "", ("train_32x32.mat",), ("test_32x32.mat",), "NCHW",
                       "http://ufldl.stanford.edu/housenumbers/ (format 2, cropped digits)",
                       split_arg=True, classes=_DIGITS, checksum_attrs=("split_list",)),
}


def _unchecked(cls: type, attrs: tuple[str, ...]) -> type:
    """Subclass of ``cls`` whose md5 entries in ``attrs`` are None (existence check only)."""
    over = {}
    for a in attrs:
        v = getattr(cls, a)
        if isinstance(v, dict) and "md5" in v:  # CIFAR meta
            over[a] = {**v, "md5": None}
        elif isinstance(v, dict):  # SVHN split_list: {split: [url, filename, md5]}
            over[a] = {k: [*row[:2], None] for k, row in v.items()}
        else:  # CIFAR train_list/test_list: [[filename, md5], ...]
            over[a] = [[row[0], None] for row in v]
    return type(cls.__name__, (cls,), over)


def expected_files(spec: VisionSpec, root: Path) -> list[Path]:
    """Absolute paths of the files torchvision needs for ``spec`` under ``root``."""
    base = root / spec.folder if spec.folder else root
    return [base / f for f in dict.fromkeys((*spec.train_files, *spec.test_files))]  # no repeats


def _missing_error(name: str, spec: VisionSpec, root: Path, download: bool, cause: Exception | None) -> DatasetError:
    files = expected_files(spec, root)
    missing = [str(p) for p in files if not p.is_file()]
    folder = files[0].parent
    cause_text = " ".join(str(cause).split())[:300]  # torchvision's messages span lines
    why = (f"downloading failed ({type(cause).__name__}: {cause_text})" if download and cause is not None
           else "dataset.download=false")
    shown = ", ".join(Path(m).name for m in missing) if missing else ", ".join(p.name for p in files)
    return DatasetError(
        f"dataset {name!r}: files not found or unreadable in {folder} ({why}). Expected: {shown}. "
        f"Get them from {spec.source} and place them there, or run once with dataset.download=true "
        f"on a machine with internet, or point dataset.root at the folder that contains "
        f"{spec.folder + '/' if spec.folder else ''}{spec.train_files[0]}."
    )


def open_split(name: str, spec: VisionSpec, root: Path, train: bool, download: bool,
               verify_checksums: bool = True):
    """The torchvision dataset object of one split.

    Raises:
        DatasetError: files missing (and not downloadable), or unreadable.
    """
    cls = _unchecked(spec.cls, spec.checksum_attrs) if not verify_checksums and spec.checksum_attrs else spec.cls
    split = {"split": "train" if train else "test"} if spec.split_arg else {"train": train}
    try:
        return cls(str(root), download=download, **split, **spec.kwargs)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError/... here
        files = expected_files(spec, root)
        if download or not all(p.is_file() for p in files):
            raise _missing_error(name, spec, root, download, e) from e
        if verify_checksums and spec.checksum_attrs and "corrupted" in str(e).lower():
            raise DatasetError(
                f"dataset {name!r}: the files in {files[0].parent} fail torchvision's md5 check (corrupt, "
                f"truncated or not the official release of {spec.source}). Download them again, or set "
                f"dataset.verify_checksums=false to use them as they are.") from e
        raise DatasetError(f"dataset {name!r}: could not read the files in {files[0].parent}: "
                           f"{type(e).__name__}: {e}") from e


def _images(ds, spec: VisionSpec) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 images ``[N, C, H, W]`` and int64 labels ``[N]`` of a torchvision dataset object."""
    x = torch.as_tensor(np.asarray(ds.data)) if not isinstance(ds.data, torch.Tensor) else ds.data
    if spec.layout == "NHW":
        x = x.unsqueeze(1)
    elif spec.layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    if spec.transpose:
        x = x.transpose(2, 3)
    y = getattr(ds, "targets", None)
    if y is None:
        y = ds.labels
    return x.contiguous(), np.asarray(y, dtype=np.int64)


def load_vision(name: str, root: str | Path = "data", download: bool = True, val_size: int = 100,
                split_seed: int = 0, normalize: bool = True, train_size: int | None = None,
                test_size: int | None = None, augment=None, verify_checksums: bool = True,
                dataset: str | None = None, repeat: int = 1, repeat_noise_std: float = 0.1) -> ALData:
    """Load a torchvision benchmark as an :class:`ALData`.

    Args:
        name: dataset name for tags and logs; also selects the dataset (one of
            :data:`SPECS`) unless ``dataset`` is given.
        root: folder torchvision reads from / downloads to (``dataset.root``).
        download: fetch missing files (needs internet). Files already there are used as is.
        val_size: validation samples held out of the official training split (stratified,
            seeded; 0 = none). Gal et al. (2017) use 100.
        split_seed: seed of the validation split and the optional subsets.
        normalize: normalise each channel with the mean/std of the train source
            (``transforms.v2.Normalize``); otherwise pixels stay in ``[0, 1]``.
        train_size: use a stratified subset of this many training samples (None = all).
        test_size: use a stratified subset of this many test samples (None = all).
        augment: list of ``transforms.v2`` transforms (or their configs) for labelled
            training batches only (see :mod:`alframe.data.transforms`).
        verify_checksums: check the files' md5 sums where torchvision knows them (CIFAR,
            SVHN); false accepts re-packed or partial copies.
        dataset: which benchmark (key of :data:`SPECS`) when ``name`` is a custom label.
        repeat: Repeated MNIST (Kirsch, van Amersfoort & Gal 2019, BatchBALD) with ``repeat=3``:
            every training image (after the validation split) appears ``repeat`` times in the
            pool, each copy with its own fixed Gaussian noise ``N(0, repeat_noise_std^2)`` added
            per pixel after normalisation (seeded by ``split_seed``). Validation images keep one
            (noisy) copy and are never repeated into the pool; the test set is untouched.
            ``repeat=1`` (default) is the plain dataset, without noise.
        repeat_noise_std: standard deviation of that noise (0.1 in the paper), in normalised units.

    Returns:
        ALData with images ``[C, H, W] float32`` (28x28 grey or 32x32 RGB), the stored
        labels as ``targets`` and the dataset's class names.

    Raises:
        DatasetError: files missing and not downloadable, or unreadable (names the folder,
            the expected files and how to get them).
        ValueError: unknown dataset, sizes outside what the data allows, ``repeat < 1`` or a
            negative ``repeat_noise_std``.
    """
    key = dataset or name
    if isinstance(repeat, bool) or int(repeat) != repeat or int(repeat) < 1:
        raise ValueError(f"dataset.repeat={repeat!r} is invalid: must be an integer >= 1 (3 = Repeated MNIST)")
    if not float(repeat_noise_std) >= 0:
        raise ValueError(f"dataset.repeat_noise_std={repeat_noise_std!r} is invalid: must be a number >= 0")
    if key not in SPECS:
        raise ValueError(f"unknown torchvision dataset {key!r}; known: {sorted(SPECS)}")
    spec = SPECS[key]
    root = Path(str(root)).expanduser()
    train_ds = open_split(key, spec, root, True, bool(download), verify_checksums)
    test_ds = open_split(key, spec, root, False, bool(download), verify_checksums)  # SVHN fetches per split
    x_tr, y_tr = _images(train_ds, spec)
    x_te, y_te = _images(test_ds, spec)
    classes = list(spec.classes) if spec.classes is not None else [str(c) for c in train_ds.classes]
    del train_ds, test_ds

    def subset(x, y, size, what, seed):
        if size is None or int(size) >= len(y):
            return x, y
        if not len(classes) <= int(size):
            raise ValueError(f"dataset.{what}={size} is too small: need at least one sample per class "
                             f"({len(classes)} classes)")
        _, keep = stratified_split(y, int(size), seed)
        return x[torch.as_tensor(keep)], y[keep]

    x_tr, y_tr = subset(x_tr, y_tr, train_size, "train_size", split_seed)
    x_te, y_te = subset(x_te, y_te, test_size, "test_size", split_seed + 2)
    if not 0 <= int(val_size) <= len(y_tr) - 2:
        raise ValueError(f"dataset.val_size must lie in [0, {len(y_tr) - 2}] for {key} "
                         f"({len(y_tr)} training samples), got {val_size}")
    val_idx = stratified_split(y_tr, int(val_size), split_seed + 1)[1] if val_size else np.empty(0, np.int64)
    mean, std = channel_stats(x_tr) if normalize else (None, None)
    x_float = to_float_normalised(x_tr, mean, std)
    if int(repeat) > 1:
        x_float, y_tr, val_idx = repeat_with_noise(x_float, y_tr, val_idx, int(repeat), float(repeat_noise_std),
                                                   split_seed)
    train = TensorImageDataset(x_float, y_tr)
    test = TensorImageDataset(to_float_normalised(x_te, mean, std), y_te)
    return ALData(
        name=name, train=train, test=test, val_idx=val_idx, num_classes=len(classes), class_names=classes,
        input_shape=tuple(train.x.shape[1:]), targets=y_tr, train_transform=train_transform(augment, mean, std),
        extras={"mean": mean, "std": std, "root": str(root), "repeat": int(repeat)},
    )


def repeat_with_noise(x: torch.Tensor, y: np.ndarray, val_idx: np.ndarray, repeat: int, noise_std: float,
                      seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Repeated MNIST's training source (Kirsch et al. 2019): validation images once, then
    ``repeat`` copies of every other image, each copy plus its own fixed noise ``N(0, noise_std^2)``.

    Args:
        x: ``[N, C, H, W] float32`` normalised training images.
        y: ``[N] int64`` their labels.
        val_idx: ``[V] int`` validation indices into ``x``.
        repeat: copies per non-validation image (>= 1).
        noise_std: noise standard deviation, in the units of ``x``.
        seed: seed of the noise (``split_seed``).

    Returns:
        ``(x [V + repeat * (N - V), C, H, W], y [same], val_idx = arange(V))``: validation first,
        then copy 0 of every pool image, copy 1, ...; copy j of pool image i sits at
        ``V + j * (N - V) + i``.
    """
    rest = np.setdiff1d(np.arange(len(y)), val_idx)
    order = np.concatenate([np.asarray(val_idx, dtype=np.int64)] + [rest] * repeat)
    gen = torch.Generator().manual_seed(int(seed) + 3)
    out = x[torch.as_tensor(order)]
    out += torch.randn(out.shape, generator=gen) * noise_std
    return out, np.asarray(y)[order], np.arange(len(val_idx), dtype=np.int64)


def _make(key: str):
    def load(**kwargs) -> ALData:
        kwargs.setdefault("name", key)
        return load_vision(dataset=kwargs.pop("dataset", key), **kwargs)

    load.__name__ = key
    load.__qualname__ = key
    load.__doc__ = f"{key}: :func:`load_vision` with ``dataset={key!r}`` (same arguments)."
    load.__signature__ = inspect.signature(load_vision)  # what it takes, for alframe.config.keys
    return load


mnist = _make("mnist")
fashion_mnist = _make("fashion_mnist")
kmnist = _make("kmnist")
emnist = _make("emnist")
cifar10 = _make("cifar10")
cifar100 = _make("cifar100")
svhn = _make("svhn")
