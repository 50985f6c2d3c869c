"""``dataset=features``: feature files read as untrusted input (one line per problem), and an
end-to-end run of heads on scikit-learn's digits written as .npz, read back from MLflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from alframe.data.features import features
from alframe.errors import DatasetError

from .helpers import cli_in_process


@pytest.fixture(scope="module")
def digits_xy():
    d = load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64)  # [1797, 64] pixel values 0..16, [1797]


def write_digits(folder, digits_xy, n_train: int = 1400) -> tuple[str, str]:
    """``train.npz`` / ``test.npz`` of the digits' 64 pixel values as features (x, y)."""
    x, y = digits_xy
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", x=x[:n_train], y=y[:n_train])
    np.savez(folder / "test.npz", x=x[n_train:], y=y[n_train:])
    return str(folder / "train.npz"), str(folder / "test.npz")


def test_npz_and_npy_with_labels_beside_read_the_same(tmp_path, digits_xy):
    tr, te = write_digits(tmp_path / "npz", digits_xy)
    x, y = digits_xy
    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "train.npy", x[:1400].astype(np.float64))  # another dtype: held as float32
    np.save(npy / "train_labels.npy", y[:1400].astype(np.int32))
    np.save(npy / "test.npy", x[1400:])
    np.save(npy / "test_labels.npy", y[1400:])
    a = features(tr, te, val_size=50)
    b = features(str(npy / "train.npy"), str(npy / "test.npy"), val_size=50)
    assert a.input_shape == (64,) and a.num_classes == 10 and a.n_train == 1400 and len(a.test) == 397
    assert a.fingerprint == b.fingerprint
    assert a.train.x.dtype == b.train.x.dtype == torch.float32
    np.testing.assert_array_equal(a.train.x.numpy(), b.train.x.numpy())
    np.testing.assert_array_equal(a.targets, y[:1400])
    assert len(a.val_idx) == 50 and a.class_names == [str(c) for c in range(10)]
    # standardised with the train source's statistics (constant pixels stay 0)
    assert np.abs(a.train.x.numpy().mean(0)).max() < 1e-4
    sd = a.train.x.numpy().std(0)
    assert np.allclose(sd[sd > 0.5], 1.0, atol=1e-3)
    raw = features(tr, te, normalize=False)
    np.testing.assert_array_equal(raw.train.x.numpy(), x[:1400])
    x0, y0 = a.train[3]
    assert x0.shape == (64,) and int(y0) == y[3]


def _case_files(tmp, digits_xy, case: str) -> dict:
    """Train/test files with one problem each; returns ``features()`` arguments."""
    x, y = digits_xy
    tr, te = tmp / "train.npz", tmp / "test.npz"
    xt, yt = x[1400:], y[1400:]
    xr, yr = x[:1400].copy(), y[:1400].copy()
    if case == "shape":
        xr = xr.reshape(1400, 8, 8)
    elif case == "nan":
        xr[17, 3] = np.nan
    elif case == "inf_after_cast":
        xr = xr.astype(np.float64)
        xr[5, 0] = 1e300  # beyond float32
    elif case == "label_range":
        yt = yt.copy()
        yt[4] = 10  # train has classes 0..9
    elif case == "negative_label":
        yr[9] = -2
    elif case == "float_labels":
        yr = yr.astype(np.float32)
    elif case == "label_count":
        yr = yr[:-1]
    elif case == "dim_mismatch":
        xt = xt[:, :60]
    elif case == "complex":
        xr = xr.astype(np.complex64)
    if case == "pickled":
        np.save(tmp / "train.npy", np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
        np.savez(te, x=xt, y=yt)
        return {"train": str(tmp / "train.npy"), "test": str(te), "train_labels": None}
    if case == "pickled_in_npz":
        np.savez(tr, x=xr, y=np.array([object()] * 1400, dtype=object))
        np.savez(te, x=xt, y=yt)
        return {"train": str(tr), "test": str(te)}
    if case == "garbage":
        tr.write_bytes(b"not numpy at all" * 10)
    elif case == "no_x":
        np.savez(tr, feats=xr, y=yr)
    elif case == "missing":
        pass
    else:
        np.savez(tr, x=xr, y=yr)
    np.savez(te, x=xt, y=yt)
    return {"train": str(tr), "test": str(te)}


BAD = {
    "shape": "features must be a 2-D array [N, D]",
    "nan": "1 NaN/inf values (first in row 17",
    "inf_after_cast": "NaN/inf values (first in row 5",
    "label_range": "label 10 at row 4 is out of range: class indices must be in [0, 10)",
    "negative_label": "label -2 at row 9 is out of range",
    "float_labels": "labels have dtype float32: need integer class indices",
    "label_count": "one entry per row of the features (1400), got shape (1399,)",
    "dim_mismatch": "has 60 features per row but dataset.train has 64",
    "complex": "features have dtype complex64: need real numbers",
    "pickled": "holds a pickled object array",
    "pickled_in_npz": "array 'y' is a pickled object array",
    "garbage": "is not a readable .npy/.npz file",
    "no_x": "has arrays ['feats', 'y']: name the features 'x'",
    "missing": "does not exist",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_feature_files_are_refused_in_one_line(tmp_path, digits_xy, case):
    kwargs = _case_files(tmp_path, digits_xy, case)
    with pytest.raises(DatasetError) as e:
        features(**kwargs)
    msg = str(e.value)
    assert BAD[case] in msg and "\n" not in msg
    key = "dataset.test" if case in ("label_range", "dim_mismatch") else "dataset.train"
    assert msg.startswith(key)


def test_feature_files_refused_on_the_command_line(tmp_path, digits_xy, monkeypatch, capsys):
    kw = _case_files(tmp_path, digits_xy, "nan")
    res = cli_in_process("dataset=features", f"dataset.train={kw['train']}", f"dataset.test={kw['test']}",
                         "model=head", "trainer=head", f"paths.output_root={tmp_path / 'out'}",
                         cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if "NaN/inf" in ln]
    assert len(lines) == 1 and "dataset.train=" in lines[0] and "row 17" in lines[0]


def test_end_to_end_heads_on_digit_features_read_back_from_mlflow(run, tmp_path, digits_xy):
    tr, te = write_digits(tmp_path / "feats", digits_xy)
    res = run("dataset=features", f"dataset.train={tr}", f"dataset.test={te}", "model=head", "trainer=head",
              "strategy=margin", "loop.rounds=3", "mlflow.log_model=true")
    client = MlflowClient(res.tracking_uri)
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.tags["dataset"] == "features" and r.data.tags["model"] == "head"
    assert r.data.params["model.net._target_"] == "alframe.models.head.FeatureHead"
    acc = sorted(client.get_metric_history(res.run_id, "test_accuracy"), key=lambda m: m.step)
    assert [m.step for m in acc] == [20, 30, 40, 50]
    assert [m.value for m in acc] == pytest.approx([h["test_accuracy"] for h in res.history])
    assert acc[-1].value > 0.75  # a linear head on 50 labelled digits' pixels: far above chance (0.1)
    assert r.data.metrics["final_accuracy"] == pytest.approx(acc[-1].value)
    # the logged MLflow model predicts from raw feature rows as they are in the files
    import mlflow.pyfunc

    assert "model/MLmodel" in {a.path for a in client.list_artifacts(res.run_id, "model")}
    model = mlflow.pyfunc.load_model(str(res.run_dir / "model"))  # the run folder's copy of that artifact
    x, y = digits_xy
    pred = np.asarray(model.predict(x[1400:1500]))
    assert (pred.astype(int) == y[1400:1500]).mean() > 0.75
