"""Contracts every config group must keep, found automatically from ``conf/``: adding a
dataset, model, oracle or experiment YAML puts it under these tests with no test code.

- every dataset config composes and loads, from tiny files in its real on-disk format, into
  an ALData whose splits, classes and image shape agree;
- every model config composes, builds its network and LightningModule, and gives ``[B, C]``;
- every oracle config instantiates and passes the oracle contract: driven as its labeller
  would (nothing for simulations, typed answers, clicks, a filled CSV), it returns labels for
  requested indices only, in ``[0, C)``, the true ones for the non-noisy oracles, with per-label
  seconds where a person answers, and it can be closed twice;
- every experiment config composes and passes the range checks of :mod:`alframe.config.schema`;
- every schema default passes its own range checks.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from alframe.config.checks import validate_static
from alframe.data.digits import digits
from alframe.oracles.base import LabelRequest, LabelResult, Oracle
from alframe.training.trainer import build_module, build_net

from .conftest import CONFIG_DIR, compose
from .fake_label_studio import FakeLabelStudio
from .helpers import (
    fill_labels,
    write_cifar,
    write_features,
    write_folder,
    write_mnist_like,
    write_svhn,
    write_unlabelled,
)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def data():
    return digits()


# --------------------------------------------------------------------------- datasets
def _mnist(folder: str, prefix=("train", "t10k")):
    return lambda root: (write_mnist_like(root, folder=folder, prefix=prefix), [f"dataset.root={root}"])[1]


#: how to write each dataset's files in its real format (a new dataset needs one line here)
WRITERS = {
    "digits": lambda root: [],
    "mnist": _mnist("MNIST"), "repeated_mnist": _mnist("MNIST"), "fashion_mnist": _mnist("FashionMNIST"),
    "kmnist": _mnist("KMNIST"), "emnist": _mnist("EMNIST", ("emnist-balanced-train", "emnist-balanced-test")),
    "cifar10": lambda root: (write_cifar(root), [f"dataset.root={root}"])[1],
    "cifar100": lambda root: (write_cifar(root, hundred=True), [f"dataset.root={root}"])[1],
    "svhn": lambda root: (write_svhn(root), [f"dataset.root={root}"])[1],
    "image_folder": lambda root: (write_folder(root, per_class=8, corrupt=False),
                                  [f"dataset.root={root}", "dataset.image_size=16", "dataset.val_size=3"])[1],
    "unlabelled_folder": lambda root: (write_unlabelled(root), [f"dataset.root={root}", "dataset.image_size=16",
                                                               "dataset.classes=[cat,dog,fish]"])[1],
    "features": write_features,
}


def test_every_dataset_has_a_writer():
    assert set(options("dataset")) == set(WRITERS), "add a writer for the new dataset to WRITERS"


@pytest.mark.parametrize("name", options("dataset"))
def test_dataset_config_composes_and_loads(name, tmp_path):
    from alframe.data.base import load_data

    overrides = [f"dataset={name}", *WRITERS[name](tmp_path / "data")]
    if name not in ("digits", "image_folder", "unlabelled_folder", "features"):  # torchvision formats: what is on disk
        overrides += ["dataset.download=false", "dataset.val_size=10"]
    if name.startswith(("cifar", "svhn")):
        overrides.append("dataset.verify_checksums=false")  # tiny files, not the official release
    cfg = compose(overrides, tmp_path)
    data = load_data(cfg.dataset)
    assert data.name == cfg.dataset.name and len(data.class_names) == data.num_classes >= 2
    x, _ = data.train[0]
    assert tuple(x.shape) == tuple(data.input_shape)
    assert len(data.train) > 0 and ((data.val_idx >= 0) & (data.val_idx < len(data.train))).all()
    if data.targets is not None:
        assert len(data.targets) == len(data.train) and data.targets.max() < data.num_classes
    assert data.fingerprint


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", options("model"))
def test_model_config_builds_net_and_module(name, tmp_path):
    cfg = compose([f"model={name}"], tmp_path)
    shape = (3, 32, 32) if name in ("resnet18", "image_classifier") else (1, 28, 28)
    net = build_net(cfg, 7, shape)
    module = build_module(cfg, net)
    assert module.net is net
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert isinstance(opt, torch.optim.Optimizer)
    net.eval()
    assert net(torch.zeros(2, *shape)).shape == (2, 7)
    validate_static(cfg)


# --------------------------------------------------------------------------- experiments
@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_config_composes_and_passes_the_range_checks(name, tmp_path):
    validate_static(compose([f"experiment={name}"], tmp_path))


def test_schema_defaults_pass_their_own_checks(tmp_path):
    validate_static(compose([], tmp_path))


# --------------------------------------------------------------------------- oracles
IDX = np.array([5, 9, 11, 20])


def drive_stored(oracle: Oracle, req: LabelRequest, truth: np.ndarray, run_dir: Path) -> LabelResult:
    return oracle.label(req)


def drive_terminal(oracle: Oracle, req: LabelRequest, truth: np.ndarray, run_dir: Path) -> LabelResult:
    oracle.input_stream = io.StringIO("".join(f"{y}\n" for y in truth[req.idx]))
    oracle.output = io.StringIO()
    return oracle.label(req)


def drive_web(oracle: Oracle, req: LabelRequest, truth: np.ndarray, run_dir: Path) -> LabelResult:
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", oracle.label(req)), daemon=True)
    t.start()
    while oracle.session.request is None:
        t.join(0.02)
    client = oracle.app.test_client()
    assert client.get(oracle.url).status_code == 303  # the printed token URL sets the cookie, as a browser
    for i in req.idx:
        version = client.get(oracle.base_url + "api/state").get_json()["version"]
        assert client.post(oracle.base_url + "api/label", headers={"X-Requested-With": "alframe"},
                           json={"index": int(i), "label": int(truth[i]), "version": version}).status_code == 200
    t.join(30)
    return out["r"]


def drive_files(oracle: Oracle, req: LabelRequest, truth: np.ndarray, run_dir: Path) -> LabelResult:
    first = oracle.label(req)
    assert first.pending and len(first.idx) == 0  # hands the batch off and waits
    fill_labels(run_dir / "queries" / f"round_{req.round}" / "labels.csv", truth)
    return oracle.label(req)  # as after loop.resume=true


def drive_label_studio(oracle: Oracle, req: LabelRequest, truth: np.ndarray, run_dir: Path) -> LabelResult:
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", oracle.label(req)), daemon=True)
    t.start()
    server = oracle.client  # the in-memory Label Studio PREPARE put there
    while len(server.round_tasks(req.round)) < len(req.idx):
        t.join(0.02)
    for task in server.round_tasks(req.round):
        server.annotate(task.id, str(truth[task.data["index"]]))
    t.join(30)
    return out["r"]


#: how each oracle's labeller answers with the true class; a new oracle needs one line here
DRIVERS = {"stored": drive_stored, "noisy": drive_stored, "terminal": drive_terminal, "web": drive_web,
           "files": drive_files, "label_studio": drive_label_studio}
#: what an oracle needs before its setup (an oracle of a server gets an in-memory server)
PREPARE = {"label_studio": lambda oracle: setattr(oracle, "client", FakeLabelStudio())}
#: oracles that may answer wrongly on purpose
NOISY = {"noisy"}


def test_every_oracle_has_a_driver():
    assert set(options("oracle")) == set(DRIVERS), "add a driver for the new oracle to DRIVERS"


@pytest.mark.parametrize("name", options("oracle"))
def test_oracle_contract(name, data, tmp_path):
    overrides = [f"oracle={name}"] + (["oracle.port=0"] if name == "web" else [])
    oracle = instantiate(compose(overrides, tmp_path).oracle)
    assert isinstance(oracle, Oracle)
    PREPARE.get(name, lambda o: None)(oracle)
    oracle.setup(data, tmp_path)
    try:
        req = LabelRequest(round=1, idx=IDX, predicted=np.array([0, 1, 2, 3]),
                           confidence=np.array([0.9, 0.8, 0.7, 0.6]))
        res = DRIVERS[name](oracle, req, data.targets, tmp_path)
        assert isinstance(res, LabelResult) and not res.pending
        assert sorted(res.idx.tolist()) == IDX.tolist()
        assert ((res.labels >= 0) & (res.labels < data.num_classes)).all()
        got = dict(zip(res.idx.tolist(), res.labels.tolist(), strict=True))
        if name not in NOISY:
            assert got == {int(i): int(data.targets[i]) for i in IDX}
        if oracle.interactive:
            assert res.seconds is not None and len(res.seconds) == len(res.idx) and (res.seconds >= 0).all()
    finally:
        oracle.close()
        oracle.close()
