"""Helpers shared by the test modules (tests import from here, never from each other):
real-format dataset writers, image folders of real digits, a shared MLflow store, readers of
run outputs, and the headless-Chromium arguments of the browser tests."""

from __future__ import annotations

import csv
import logging
import pickle
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from alframe.data.base import load_data

from .conftest import CONFIG_DIR, compose

#: headless Debian chromium, as root, with the machine's closed network
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


# --------------------------------------------------------------------------- the command, in process
@dataclass
class CliResult:
    """What one ``alframe`` command gave: exit code, printed output and errors."""

    returncode: int
    stdout: str
    stderr: str


def cli_in_process(*args: str, cwd: Path, monkeypatch, capsys) -> CliResult:
    """Run the real ``alframe`` command (Hydra's argument parsing, launcher and callbacks, the
    same ``main``) in this process, as if typed in ``cwd``: no second interpreter has to import
    torch, Lightning and MLflow again (several seconds per command). Tests of signals and crashes
    still start a real process. Hydra's logging handlers, its global state and the job prefix are
    undone afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    from alframe import progress
    from alframe.cli import run as cli

    monkeypatch.setattr(sys, "argv", ["alframe", *args])
    monkeypatch.chdir(cwd)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)
        GlobalHydra.instance().clear()
        progress.set_job_prefix("")
    out = capsys.readouterr()
    return CliResult(code, out.out, out.err)


# --------------------------------------------------------------------------- real-format writers
def digit_images(n: int, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real digits as uint8 ``[n, size, size]`` (8x8 upscaled, padded) and labels ``[n]``."""
    d = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(d.target))[:n]
    scale = size // 8
    img = np.kron(d.images[pick], np.ones((scale, scale))) * (255.0 / 16.0)
    pad = size - 8 * scale
    img = np.pad(img, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))
    return np.rint(img).astype(np.uint8), d.target[pick].astype(np.uint8)


def write_idx(path: Path, arr: np.ndarray) -> None:
    """IDX file (LeCun's MNIST format): magic 0x0000080N (ubyte, N dims), big-endian sizes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, arr.ndim))
        f.write(struct.pack(f">{arr.ndim}I", *arr.shape))
        f.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def write_mnist_like(root: Path, folder: str = "MNIST", n_train: int = 120, n_test: int = 40,
                     prefix: tuple[str, str] = ("train", "t10k"), classes: int = 10) -> dict:
    """MNIST/Fashion/KMNIST raw layout (or EMNIST's with ``prefix``); returns the arrays."""
    x, y = digit_images(n_train + n_test)
    y = y % classes
    raw = root / folder / "raw"
    tr, te = prefix
    write_idx(raw / f"{tr}-images-idx3-ubyte", x[:n_train])
    write_idx(raw / f"{tr}-labels-idx1-ubyte", y[:n_train])
    write_idx(raw / f"{te}-images-idx3-ubyte", x[n_train:])
    write_idx(raw / f"{te}-labels-idx1-ubyte", y[n_train:])
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]}


def rgb_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real digits as 32x32 RGB uint8 ``[n, 32, 32, 3]`` with a per-class tint, labels ``[n]``."""
    x, y = digit_images(n, size=32, seed=seed)
    tint = np.stack([np.linspace(0.4, 1.0, 10), np.linspace(1.0, 0.4, 10), np.full(10, 0.7)], axis=1)
    rgb = x[..., None].astype(np.float64) * tint[y][:, None, None, :]
    return np.rint(rgb).astype(np.uint8), y.astype(np.int64)


def write_cifar(root: Path, hundred: bool = False, n_train: int = 100, n_test: int = 40) -> dict:
    """CIFAR-10 (5 pickled data batches + test_batch + batches.meta) or CIFAR-100 layout."""
    x, y = rgb_digits(n_train + n_test)
    flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # rows of 3072: R plane, G plane, B plane

    def dump(path: Path, obj) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump(obj, f)

    if hundred:
        base = root / "cifar-100-python"
        dump(base / "train", {"data": flat[:n_train], "fine_labels": y[:n_train].tolist(),
                              "coarse_labels": (y[:n_train] // 2).tolist()})
        dump(base / "test", {"data": flat[n_train:], "fine_labels": y[n_train:].tolist(),
                             "coarse_labels": (y[n_train:] // 2).tolist()})
        dump(base / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                             "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    else:
        base = root / "cifar-10-batches-py"
        parts = np.array_split(np.arange(n_train), 5)
        for i, p in enumerate(parts, 1):
            dump(base / f"data_batch_{i}", {"data": flat[p], "labels": y[p].tolist()})
        dump(base / "test_batch", {"data": flat[n_train:], "labels": y[n_train:].tolist()})
        dump(base / "batches.meta", {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                     "frog", "horse", "ship", "truck"]})
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]}


def write_svhn(root: Path, n_train: int = 100, n_test: int = 40) -> dict:
    """SVHN format 2: ``X [32, 32, 3, N] uint8``, ``y [N, 1]`` with label 10 for the digit 0."""
    from scipy.io import savemat

    x, y = rgb_digits(n_train + n_test, seed=1)
    root.mkdir(parents=True, exist_ok=True)
    for fname, sl in (("train_32x32.mat", slice(0, n_train)), ("test_32x32.mat", slice(n_train, None))):
        yy = y[sl].copy()
        yy[yy == 0] = 10
        savemat(root / fname, {"X": x[sl].transpose(1, 2, 3, 0), "y": yy[:, None].astype(np.uint8)})
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]}


def write_features(root: Path, n_train: int = 300) -> list[str]:
    """``dataset=features`` files: the 64 pixel values of real digits as features, ``train.npz`` and
    ``test.npz`` (``x``, ``y``); returns the overrides that point at them."""
    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "train.npz", x=x[:n_train], y=y[:n_train])
    np.savez(root / "test.npz", x=x[n_train:n_train + 100], y=y[n_train:n_train + 100])
    return [f"dataset.train={root / 'train.npz'}", f"dataset.test={root / 'test.npz'}"]


def compose_shared(overrides: list[str], out: Path, store: Path):
    """Like ``conftest.compose`` but with the MLflow store ``store`` shared across a module's
    runs (creating a SQLite store runs MLflow's migrations, several seconds each time)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[
            f"paths.output_root={out}", f"mlflow.tracking_uri=sqlite:///{store}", *overrides])


def load(tmp_path: Path, name: str, root: Path, *overrides: str):
    cfg = compose([f"dataset={name}", f"dataset.root={root}", "dataset.download=false", *overrides],
                  tmp_path / "out")
    return load_data(cfg.dataset)


_STORE: list[Path] = []


def shared_store(tmp_path_factory) -> Path:
    """One MLflow SQLite store shared by the end-to-end runs of all dataset/model test modules
    (each run uses its own MLflow experiment name); modules wrap it in a ``store`` fixture."""
    if not _STORE:
        _STORE.append(tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    return _STORE[0]



# --------------------------------------------------------------------------- image folders
def cfg_for(tmp_path, root, *extra):
    return compose(["dataset=image_folder", f"dataset.root={root}", "dataset.image_size=16", *extra],
                   tmp_path / "out")


CLASSES = ["cat", "dog", "fish"]  # digits 0, 1, 2 stand in for three user classes


def write_folder(root: Path, per_class: int = 12, size: int = 16, corrupt: bool = True, seed: int = 0) -> dict:
    """``root/<class>/<i>.png`` RGB images of real digits; optionally one corrupt ``.png``."""
    x, y = digit_images(1797 if per_class > 40 else 400, size=size, seed=seed)
    files = {}
    for c, name in enumerate(CLASSES):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for j, img in enumerate(x[y == c][:per_class]):
            rgb = np.stack([img, img // 2, 255 - img], axis=-1).astype(np.uint8)
            p = d / f"{j:03d}.png"
            Image.fromarray(rgb).save(p)
            files[str(p)] = (rgb, c)
    bad = None
    if corrupt:
        bad = root / "dog" / "zz_broken.png"
        good = (root / "dog" / "000.png").read_bytes()
        bad.write_bytes(good[: len(good) // 3])  # a truncated PNG: header fine, data cut
    return {"files": files, "bad": bad}


# --------------------------------------------------------------------------- unlabelled
def write_unlabelled(root: Path) -> list[Path]:
    info = write_folder(root / "_src", per_class=5, corrupt=False)
    files = []
    for i, (p, _) in enumerate(sorted(info["files"].items())):
        dst = root / ("batch1" if i % 2 else "batch2") / f"img{i:02d}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        Path(p).rename(dst)
        files.append(dst)
    for d in sorted((root / "_src").iterdir()):
        d.rmdir()
    (root / "_src").rmdir()
    return sorted(files)



# --------------------------------------------------------------------------- run outputs
def read_queries(run_dir: Path) -> list[dict]:
    with (run_dir / "queries.csv").open() as f:
        return [{k: (v if k == "class_name" else int(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def fill_labels(csv_path: Path, truth) -> dict[int, int]:
    """Fill the ``label`` column of a files-oracle ``labels.csv`` with ``truth[index]`` (a
    person who answers right); returns ``{index: label}`` as written."""
    rows = list(csv.DictReader(csv_path.open()))
    for r in rows:
        r["label"] = str(truth[int(r["index"])])
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return {int(r["index"]): int(r["label"]) for r in rows}


def run_in_thread(exp, wait_s: float = 30.0):
    """Start ``exp.run()`` in a thread (as a person's browser session needs) and wait for the
    web oracle's URL; returns ``(thread, out, url)``, ``out["result"]`` or ``out["error"]``."""
    import threading
    import time

    out: dict = {}

    def work():
        try:
            out["result"] = exp.run()
        except BaseException as e:  # surfaced by the caller's assertions
            out["error"] = e

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    deadline = time.time() + wait_s
    while not getattr(exp.oracle, "url", None) and time.time() < deadline:
        time.sleep(0.05)
    return thread, out, exp.oracle.url


def joined_result(thread, out: dict, timeout: float):
    """Wait for a :func:`run_in_thread` run to end; assert it ended without an error and
    return its RunResult."""
    thread.join(timeout)
    assert not thread.is_alive()
    assert "error" not in out, out.get("error")
    return out["result"]
