"""Every model config: shapes for its intended input, embedding size, where the dropout sits,
MC sampling, and one end-to-end round on tiny real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from alframe.models.base import ALNet, mc_dropout
from alframe.scoring.pool import compute_outputs

from .conftest import REPO
from .helpers import compose_shared, shared_store, write_cifar, write_features, write_folder, write_mnist_like


@pytest.fixture
def store(tmp_path_factory) -> Path:
    """The MLflow store shared by this session's dataset/model end-to-end runs."""
    return shared_store(tmp_path_factory)

MODEL_DIR = REPO / "conf" / "model"

#: model config -> (intended input shape, classes, embedding dim D, trunk deterministic?)
INTENDED = {
    "small_cnn": ((1, 28, 28), 10, 128, True),
    "gal_cnn": ((1, 28, 28), 10, 128, True),
    "batchbald_cnn": ((1, 28, 28), 10, 128, False),
    "lenet5": ((1, 28, 28), 10, 84, True),
    "image_classifier": ((3, 64, 64), 3, 512, True),
    "resnet18": ((3, 32, 32), 10, 512, True),
    # heads on feature vectors: the embedding of a linear head is its input
    "head": ((64,), 10, 64, True),
    "frozen": ((512,), 10, 512, True),  # ResNet-18's 512 features
}


def model_names() -> list[str]:
    return sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))


def build(name: str, input_shape, num_classes: int, **params) -> ALNet:
    cfg = OmegaConf.load(MODEL_DIR / f"{name}.yaml")
    return instantiate(cfg.net, num_classes=num_classes, input_shape=tuple(input_shape), **params)


def test_every_model_config_is_covered_here():
    assert set(model_names()) == set(INTENDED), "add new model configs to INTENDED"
    for name in model_names():
        cfg = OmegaConf.load(MODEL_DIR / f"{name}.yaml")
        assert cfg.name == name
        assert {"net", "optimizer", "batch_size"} <= set(cfg)
        assert cfg.optimizer._partial_ is True


@pytest.mark.parametrize("name", sorted(INTENDED))
def test_forward_shapes_embedding_and_dropout_placement(name):
    shape, classes, dim, deterministic_trunk = INTENDED[name]
    torch.manual_seed(0)
    net = build(name, shape, classes).eval()
    x = torch.randn(5, *shape)
    with torch.no_grad():
        logits, emb = net(x), net.embed(x)
    assert logits.shape == (5, classes)
    assert emb.shape == (5, dim) and net.embedding_dim == dim
    assert net.num_classes == classes
    assert net.has_dropout
    assert net.trunk_is_deterministic is deterministic_trunk
    # The embedding is what the classifier sees: head[-1](embed(x)) == logits.
    torch.testing.assert_close(net.head[-1](emb), logits)
    # Classes follow the dataset.
    with torch.no_grad():
        assert build(name, shape, 3).eval()(x).shape == (5, 3)


@pytest.mark.parametrize("name", sorted(INTENDED))
def test_mc_dropout_samples_differ_and_deterministic_trunks_stay_fixed(name):
    shape, classes, _, deterministic_trunk = INTENDED[name]
    torch.manual_seed(0)
    net = build(name, shape, classes)
    x = torch.randn(4, *shape)
    with torch.no_grad(), mc_dropout(net):
        h1, h2 = net.trunk(x), net.trunk(x)
        y1, y2 = net.head(h1), net.head(h1)
    assert not torch.allclose(y1, y2)  # the head samples dropout masks
    if deterministic_trunk:
        torch.testing.assert_close(h1, h2)
    else:
        assert not torch.allclose(h1, h2)  # dropout inside the trunk (whole-network sampling)
    assert net.training  # mc_dropout restored the flags
    # Through the scoring code: T different samples per input, deterministic probs repeatable.
    ds = torch.utils.data.TensorDataset(x, torch.zeros(4, dtype=torch.long))
    out = compute_outputs(net, ds, np.arange(4), {"probs", "mc_probs"}, mc_samples=6, batch_size=3)
    assert out.mc_probs.shape == (4, 6, classes)
    assert (out.mc_probs.std(dim=1) > 0).any()
    torch.testing.assert_close(out.mc_probs.sum(-1), torch.ones(4, 6))
    again = compute_outputs(net, ds, np.arange(4), {"probs"}, batch_size=3)
    torch.testing.assert_close(out.probs, again.probs)


def test_models_reject_inputs_too_small_with_a_clear_error():
    from alframe.models.cnn import BatchBALDCNN

    with pytest.raises(ValueError, match="batchbald_cnn.*\\(1, 8, 8\\)"):
        BatchBALDCNN(10, (1, 8, 8))


def test_gal_cnn_matches_the_paper_layout():
    net = build("gal_cnn", (1, 28, 28), 10)
    convs = [m for m in net.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (4, 4)), (32, (4, 4))]
    assert isinstance(net.head[0], torch.nn.Dropout) and net.head[0].p == 0.25
    assert net.head[1].in_features == 32 * 11 * 11 and net.head[1].out_features == 128
    assert [m.p for m in net.head if isinstance(m, torch.nn.Dropout)] == [0.25, 0.5]


def test_batchbald_cnn_matches_their_layout():
    net = build("batchbald_cnn", (1, 28, 28), 10)
    convs = [m for m in net.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (64, (5, 5))]
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in net.trunk) == 2
    assert net.head[0].in_features == 1024
    assert build("batchbald_cnn", (1, 28, 28), 10, conv_dropout=0.0).trunk_is_deterministic


# --------------------------------------------------------------------------- end to end
def tiny_data_overrides(name: str, tmp_path: Path) -> list[str]:
    """A tiny real dataset at the model's intended input size, loaded through the config."""
    shape = INTENDED[name][0]
    if name == "frozen":  # a torchvision backbone (random: nothing to download) over tiny MNIST, once
        write_mnist_like(tmp_path / "data", n_train=150, n_test=60)
        return ["dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.download=false",
                "dataset.val_size=20", "model.backbone.weights=null", "trainer=head"]
    if shape == (64,):
        return ["dataset=features", "dataset.val_size=20", "trainer=head",
                *write_features(tmp_path / "features", n_train=150)]
    if shape == (1, 28, 28):
        write_mnist_like(tmp_path / "data", n_train=150, n_test=60)
        return ["dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.download=false",
                "dataset.val_size=20"]
    if shape == (3, 32, 32):
        write_cifar(tmp_path / "data", n_train=40, n_test=10)
        return ["dataset=cifar10", f"dataset.root={tmp_path / 'data'}", "dataset.download=false",
                "dataset.val_size=0", "dataset.verify_checksums=false",
                "trainer.max_epochs=1"]  # ResNet-18 is the costly one on CPU: one epoch per round
    if shape == (3, 64, 64):
        write_folder(tmp_path / "photos", per_class=15, size=64, corrupt=False)
        return ["dataset=image_folder", f"dataset.root={tmp_path / 'photos'}", "dataset.image_size=64",
                "dataset.test_size=9"]
    raise AssertionError(f"no tiny dataset for input shape {shape}")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet18" else n
                                  for n in sorted(INTENDED)])
def test_one_round_end_to_end_per_model(name, tmp_path, store):
    """Train, evaluate, score the pool with MC dropout (BALD), query, train again."""
    from mlflow import MlflowClient

    from alframe.loop.experiment import run_experiment

    cfg = compose_shared(["trainer.max_epochs=2", *tiny_data_overrides(name, tmp_path), f"model={name}",
                          "strategy=bald", "strategy.mc_samples=4", "loop.initial_size=12",
                          "loop.query_size=6", "loop.rounds=1", "model.batch_size=16",
                          f"mlflow.experiment_name=models_{name}"], tmp_path / "out", store)
    res = run_experiment(cfg, tmp_path / "out" / "job")
    assert res.status == "finished" and [h["n_labelled"] for h in res.history] == [12, 18]
    run = MlflowClient(res.tracking_uri).get_run(res.run_id)
    assert run.data.tags["model"] == name
    assert 0.0 <= run.data.metrics["final_accuracy"] <= 1.0
    assert (res.run_dir / "last_model.pt").is_file()


# --------------------------------------------------------------------------- ResNet-18 details
def test_resnet18_cifar_stem_and_imagenet_stem():
    net = build("resnet18", (3, 32, 32), 10)
    conv1 = net.trunk[0]
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.trunk.modules())
    assert isinstance(net.head[0], torch.nn.Dropout) and net.head[-1].in_features == 512
    imagenet = build("resnet18", (1, 64, 64), 5, cifar_stem=False, dropout=0.0)
    assert imagenet.trunk[0].kernel_size == (7, 7) and imagenet.trunk[0].in_channels == 1
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in imagenet.trunk.modules())
    assert not imagenet.has_dropout and len(imagenet.head) == 1
    with torch.no_grad():
        assert imagenet.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def test_resnet18_pretrained_from_a_local_file(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(3)
    reference = resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)
    net = build("resnet18", (3, 32, 32), 10, pretrained=True, weights_path=str(path))
    torch.testing.assert_close(net.trunk[4][0].conv1.weight, reference.layer1[0].conv1.weight)
    torch.testing.assert_close(net.trunk[7][1].bn2.running_var, reference.layer4[1].bn2.running_var)
    fresh = build("resnet18", (3, 32, 32), 10)
    assert not torch.allclose(fresh.trunk[4][0].conv1.weight, reference.layer1[0].conv1.weight)


def test_resnet18_pretrained_offline_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.models._api as api

    from alframe.models.resnet import ResNet18, WeightsUnavailableError

    def offline(*args, **kwargs):  # what torch.hub raises without a network
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as e:
        ResNet18(10, (3, 32, 32), pretrained=True)
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and "model.net.pretrained=false" in msg and "weights_path" in msg
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        ResNet18(10, (3, 32, 32), pretrained=True, weights_path=str(tmp_path / "nope.pth"))


def test_model_errors_stop_the_run_before_any_labelling(tmp_path, store):
    from alframe.errors import ConfigError
    from alframe.loop.experiment import Experiment

    cfg = compose_shared(["model=batchbald_cnn"], tmp_path / "out", store)  # digits are 8x8: too small
    with pytest.raises(ConfigError, match=r"batchbald_cnn.*\(1, 8, 8\)"):
        Experiment(cfg, tmp_path / "out" / "job")
    assert not (tmp_path / "out" / "job" / "queries.csv").exists()


# --------------------------------------------------------------------------- optimisation loop
def _train_weights(cfg, automatic: bool, n: int = 70) -> tuple[dict, float]:
    """Weights after fitting a fresh SmallCNN on ``n`` digits for 3 epochs (3 batches each, an
    epoch-interval cosine schedule), with Lightning's automatic loop or ALClassifier's own."""
    import pytorch_lightning as pl

    from alframe.data.base import LabelledView, make_loader
    from alframe.data.digits import digits
    from alframe.training.trainer import build_module, build_net, build_trainer

    data = digits()
    pl.seed_everything(0, verbose=False)
    module = build_module(cfg, build_net(cfg, 10, data.input_shape))
    module.automatic_optimization = automatic
    loader = make_loader(LabelledView(data.train, np.arange(n), data.targets[:n]), batch_size=32, shuffle=True, seed=0)
    trainer = build_trainer(cfg, Path(cfg.paths.output_root), has_val=False)
    trainer.fit(module, train_dataloaders=loader)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    return {k: v.clone() for k, v in module.net.state_dict().items()}, lr


def test_alclassifier_steps_exactly_as_lightnings_automatic_loop(tmp_path):
    """Same seed, same batches: the manual step (zero_grad, backward, step; scheduler per epoch)
    leaves bit-identical weights and learning rate to Lightning's automatic optimisation."""
    from .conftest import compose

    cfg = compose(["trainer.max_epochs=3", "+model.scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR",
                   "+model.scheduler._partial_=true", "+model.scheduler.T_max=3"], tmp_path)
    manual, lr_manual = _train_weights(cfg, automatic=False)
    auto, lr_auto = _train_weights(cfg, automatic=True)
    assert lr_manual == lr_auto == pytest.approx(0.0, abs=1e-12)  # cosine, T_max=3: all 3 epochs stepped
    assert manual.keys() == auto.keys()
    for k in manual:
        assert torch.equal(manual[k], auto[k]), k


def test_gradient_clipping_switches_to_lightnings_automatic_loop(tmp_path, store):
    """``trainer.extra.gradient_clip_val`` works only with automatic optimisation: the run uses
    it (and clips), instead of Lightning refusing manual optimisation."""
    from alframe.loop.experiment import run_experiment
    from alframe.training.trainer import build_module, build_net, needs_automatic_optimization

    from .conftest import FAST, compose

    cfg = compose([*FAST, "loop.rounds=1", "+trainer.extra.gradient_clip_val=0.5"], tmp_path)
    assert needs_automatic_optimization(cfg)
    assert build_module(cfg, build_net(cfg, 10, (1, 8, 8))).automatic_optimization
    assert not needs_automatic_optimization(compose(FAST, tmp_path))
    assert run_experiment(cfg, tmp_path / "job").status == "finished"
