"""Frozen backbone, head-only rounds (``model=frozen``): backbones from torchvision's registry and
from checkpoint files, the features cache of the run folder (computed once, reused, foreign caches
refused), head training on cached features equal to training on features computed on the fly, and
MC dropout on the head equal to T full passes with the same masks."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

from alframe.data.digits import digits
from alframe.errors import ConfigError, StateMismatchError
from alframe.models.backbone import FrozenBackbone, build_backbone
from alframe.models.base import ALNet
from alframe.models.cnn import SmallCNN
from alframe.rundir.state import PoolState
from alframe.scoring import mc
from alframe.scoring.pool import compute_outputs
from alframe.training import trainer
from alframe.training.frozen import frozen_data

from .conftest import compose


@pytest.fixture(scope="module")
def data():
    return digits()  # 1,347 train (100 validation) / 450 test images [1, 8, 8]


def small_cnn(path, seed: int = 0) -> str:
    """A SmallCNN's state_dict file: the backbone of these tests (its embedding: 128 features)."""
    torch.manual_seed(seed)
    torch.save(SmallCNN(10, (1, 8, 8)).state_dict(), path)
    return str(path)


def frozen(ckpt: str, *more: str) -> list[str]:
    return ["model=frozen", "trainer=head", "model.backbone.name=alframe.models.cnn.SmallCNN",
            "model.backbone.weights=null", f"model.backbone.checkpoint={ckpt}", *more]


@pytest.fixture
def forwards(monkeypatch):
    """Rows of every backbone forward call, in order."""
    rows: list[int] = []
    original = FrozenBackbone.forward

    def counting(self, x):
        rows.append(len(x))
        return original(self, x)

    monkeypatch.setattr(FrozenBackbone, "forward", counting)
    return rows


# --------------------------------------------------------------------------- backbones
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_checkpoint_backbones_give_the_networks_embedding(tmp_path, data):
    ckpt = small_cnn(tmp_path / "cnn.pt")
    net = SmallCNN(10, (1, 8, 8))
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    net.eval()
    x = data.train.x[:64]
    want = net.embed(x)
    spec = {"name": "alframe.models.cnn.SmallCNN", "checkpoint": ckpt}
    b = build_backbone(spec, 10, (1, 8, 8))
    assert b.identity["cut"] == "head.4"
    torch.testing.assert_close(b(x), want)
    # a Lightning checkpoint's state_dict (keys under "net.") is the same backbone
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, tmp_path / "l.ckpt")
    lit = build_backbone({**spec, "checkpoint": str(tmp_path / "l.ckpt")}, 10, (1, 8, 8))
    assert lit.fingerprint() == b.fingerprint()

    class Embed(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return self.n.embed(x)

    torch.jit.save(torch.jit.trace(Embed(net), x[:2]), tmp_path / "ts.pt")
    ts = build_backbone({"checkpoint": str(tmp_path / "ts.pt")}, 10, (1, 8, 8))
    assert ts.identity["arch"] == "torchscript"
    torch.testing.assert_close(ts(x), want)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_bad_checkpoints_and_keys_are_refused_in_one_line(tmp_path):
    ckpt = small_cnn(tmp_path / "cnn.pt")
    torch.save(SmallCNN(10, (1, 8, 8)), tmp_path / "module.pt")  # a pickled module, not weights
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    torch.save(nn.Linear(3, 4).state_dict(), tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 100)
    torch.jit.save(torch.jit.trace(nn.Linear(64, 8), torch.zeros(1, 64)), tmp_path / "ts.pt")
    cnn = {"name": "alframe.models.cnn.SmallCNN"}
    cases = [
        ({**cnn, "checkpoint": str(tmp_path / "module.pt")}, "is neither a state_dict nor a TorchScript file"),
        ({**cnn, "checkpoint": str(tmp_path / "garbage.pt")}, "is neither a state_dict nor a TorchScript file"),
        ({**cnn, "checkpoint": str(tmp_path / "list.pt")}, "holds a list, not a state_dict"),
        ({**cnn, "checkpoint": str(tmp_path / "other.pt")}, "does not fit alframe.models.cnn.SmallCNN"),
        ({**cnn, "checkpoint": str(tmp_path / "nope.pt")}, "does not exist"),
        ({**cnn, "checkpoint": str(tmp_path / "ts.pt")}, "is a TorchScript file, which carries its own architecture"),
        ({"name": "resnet18", "weights": "DEFAULT", "checkpoint": ckpt}, "choose one"),
        ({"name": "no_such_net"}, "neither in torchvision's registry"),
        ({"name": "resnet18", "weights": "NOPE"}, "is not a weights name of resnet18"),
        ({"checkpoint": ckpt}, "model.backbone.name is missing"),
        ({"name": "alframe.models.cnn.SmallCNN", "weights": "DEFAULT"}, "is not a torchvision model"),
        ({"name": "alframe.models.cnn.SmallCNN", "mean": [0.5]}, "go together"),
    ]
    for spec, fragment in cases:
        with pytest.raises(ConfigError) as e:
            build_backbone(spec, 10, (1, 8, 8))
        assert fragment in str(e.value) and "\n" not in str(e.value), (spec, str(e.value))


def test_torchvision_registry_backbone(monkeypatch):
    a = build_backbone({"name": "resnet18", "weights": None, "init_seed": 0}, 10, (1, 8, 8))
    assert a.prep.channels == 3 and a.identity["cut"] == "fc"  # grey images repeated to RGB
    assert a(torch.zeros(4, 1, 8, 8)).shape == (4, 512)
    assert a.fingerprint() == build_backbone({"name": "resnet18", "init_seed": 0}, 10, (1, 8, 8)).fingerprint()
    assert a.fingerprint() != build_backbone({"name": "resnet18", "init_seed": 1}, 10, (1, 8, 8)).fingerprint()

    from torchvision.models import resnet18
    from torchvision.models._api import WeightsEnum

    state = resnet18().state_dict()  # stands in for the ImageNet file (no download here)
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: state)
    w = build_backbone({"name": "resnet18", "weights": "DEFAULT"}, 10, (3, 32, 32), [0.5] * 3, [0.25] * 3)
    assert w.identity["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert w.prep.pixels and w.prep.resize == (224, 224) and w.prep.mean == (0.485, 0.456, 0.406)
    torch.testing.assert_close(w.net.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])

    def offline(self, *a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ConfigError) as e:
        build_backbone({"name": "resnet18", "weights": "DEFAULT"}, 10, (3, 32, 32))
    assert "could not be fetched" in str(e.value) and "resnet18-f37072fd.pth" in str(e.value)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- the cache
def test_cache_is_written_once_and_reused_on_resume(run, tmp_path, forwards):
    ckpt = small_cnn(tmp_path / "cnn.pt")
    first = run(*frozen(ckpt, "strategy=bald", "loop.rounds=1", "loop.resume=true"))
    # one dry run of 2 rows when the backbone is built, then train (3 x 512) and test (450) once
    assert forwards == [2, 512, 512, 323, 450]
    cache = first.run_dir / "features"
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert set(stamps) == {"train.npz", "test.npz"}
    with np.load(cache / "train.npz") as z:
        assert z["x"].shape == (1347, 128) and z["x"].dtype == np.float32
        np.testing.assert_array_equal(z["y"], digits().targets)
    forwards.clear()
    second = run(*frozen(ckpt, "strategy=bald", "loop.rounds=3", "loop.resume=true"))
    assert second.run_id == first.run_id and [h["n_labelled"] for h in second.history] == [20, 30, 40, 50]
    assert forwards == [2]  # the dry run only: the features came from the cache
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert second.history[-1]["test_accuracy"] > 0.3  # a random CNN's features still beat chance (0.1)
    from alframe.export.runfolder import load_run

    forwards.clear()
    loaded = load_run(second.run_dir, need_model=True)  # alframe-export / -predict read the run's features
    assert forwards == [2] and loaded.data.input_shape == (128,)
    with torch.no_grad():
        acc = (loaded.net(loaded.data.test.x).argmax(1) == loaded.data.test.y).float().mean().item()
    assert acc == pytest.approx(second.history[-1]["test_accuracy"], abs=1e-6)


def test_foreign_or_torn_cache_is_never_used(tmp_path, data, forwards):
    a, b = small_cnn(tmp_path / "a.pt", seed=0), small_cnn(tmp_path / "b.pt", seed=1)
    run_dir = tmp_path / "run"
    base = frozen_data(compose(frozen(a), tmp_path), data, run_dir)
    assert len(forwards) == 5
    forwards.clear()
    with pytest.raises(StateMismatchError, match="computed for another backbone"):
        frozen_data(compose(frozen(b), tmp_path), data, run_dir)
    other = digits(split_seed=1)  # the same images, another split: other data
    with pytest.raises(StateMismatchError, match="computed for another data"):
        frozen_data(compose(frozen(a), tmp_path), other, run_dir)
    assert forwards == [2, 2]  # dry runs only: nothing was computed from, or read into, the foreign cache
    # standardisation is part of the run's config, not of the cache: same files, other view
    raw = frozen_data(compose(frozen(a, "model.backbone.standardize=false"), tmp_path), data, run_dir)
    assert not torch.equal(raw.train.x, base.train.x)
    # a torn file is computed again, giving the same features
    path = run_dir / "features" / "train.npz"
    path.write_bytes(path.read_bytes()[:1000])
    forwards.clear()
    again = frozen_data(compose(frozen(a), tmp_path), data, run_dir)
    assert sum(forwards) == 2 + 1347 + 450
    torch.testing.assert_close(again.train.x, base.train.x, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- training and scoring
class Standardise(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, h):
        return (h - self.mean) / self.std


def on_the_fly(cfg, feats, data):
    """The backbone inside the network: features computed for every batch, never cached."""
    spec = dict(cfg.model.backbone)
    backbone = build_backbone(spec, data.num_classes, data.input_shape, data.extras["mean"], data.extras["std"])
    return nn.Sequential(backbone, Standardise(feats.extras["mean"], feats.extras["std"]))


@pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode")  # the frozen backbone, on purpose
def test_head_on_cached_features_equals_head_on_features_computed_on_the_fly(tmp_path, data, monkeypatch):
    cfg = compose(frozen(small_cnn(tmp_path / "cnn.pt"), "trainer.steps_per_round=30", "model.batch_size=16"),
                  tmp_path)
    feats = frozen_data(cfg, data, tmp_path / "run")
    state = PoolState.create(data.n_train, holdout=data.val_idx)
    idx = np.random.default_rng(0).choice(state.pool_idx, 40, replace=False)
    state.label(idx, data.targets[idx], 0)
    cached = trainer.fit(cfg, feats, state, 1, tmp_path / "run")
    again = trainer.fit(cfg, feats, state, 1, tmp_path / "run")
    for k, v in cached.state_dict().items():  # determinism under the seed: bit for bit
        assert torch.equal(v, again.state_dict()[k]), k

    trunk, build = on_the_fly(cfg, feats, data), trainer.build_net
    monkeypatch.setattr(trainer, "build_net", lambda c, n, shape: ALNet(trunk, build(c, n, feats.input_shape).head))
    fly = trainer.fit(cfg, data, state, 1, tmp_path / "run")  # the image data: the backbone runs every step
    for k, v in cached.head.state_dict().items():
        torch.testing.assert_close(fly.head.state_dict()[k], v, rtol=0, atol=1e-5)
    with torch.no_grad():
        a, b = cached.eval()(feats.test.x), fly.eval()(data.test.x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    assert torch.equal(a.argmax(1), b.argmax(1))


@pytest.mark.parametrize("consistent", [True, False])
def test_mc_dropout_on_the_head_equals_t_full_passes_with_the_same_masks(tmp_path, data, monkeypatch, consistent):
    cfg = compose(frozen(small_cnn(tmp_path / "cnn.pt"), "model.net.dropout=0.5"), tmp_path)
    feats = frozen_data(cfg, data, tmp_path / "run")
    torch.manual_seed(1)
    net = trainer.build_net(cfg, feats.num_classes, feats.input_shape).eval()
    assert net.trunk_is_deterministic and isinstance(net.head[0], nn.Dropout)
    idx, t = np.arange(5, 305), 12
    drawn: list[torch.Tensor] = []
    keep = mc.keep_mask
    monkeypatch.setattr(mc, "keep_mask", lambda *a, **k: drawn.append(keep(*a, **k)) or drawn[-1])
    torch.manual_seed(7)
    out = compute_outputs(net, feats.train, idx, {"mc_probs"}, mc_samples=t, mask_seed=123 if consistent else None)
    if consistent:
        masks = mc.ConsistentMasks(net, 123, t).mask(net.head[0], (128,))[:, 0]  # [T, D], scaled by 1 / (1 - p)
    else:
        assert len(drawn) == 1 and drawn[0].shape == (t, len(idx), 128)
        masks = drawn[0].float() / 0.5  # [T, M, D]
    full = on_the_fly(cfg, feats, data)
    with torch.no_grad():
        for s in range(t):  # the whole network, T times: backbone, standardise, dropout with mask s, linear
            want = torch.softmax(net.head[1](full(data.train.x[idx]) * masks[s]), dim=-1)
            torch.testing.assert_close(out.mc_probs[:, s], want, rtol=0, atol=1e-5)
    assert (out.mc_probs.std(dim=1) > 0).any()  # the samples differ


def test_embeddings_of_a_linear_head_are_the_cached_features(tmp_path, data):
    cfg = compose(frozen(small_cnn(tmp_path / "cnn.pt")), tmp_path)
    feats = frozen_data(cfg, data, tmp_path / "run")
    net = trainer.build_net(cfg, feats.num_classes, feats.input_shape)
    idx = np.arange(0, 1347, 7)
    out = compute_outputs(net, feats.train, idx, {"embeddings", "labelled_embeddings"}, labelled_idx=np.arange(10))
    assert torch.equal(out.embeddings, feats.train.x[idx])
    assert torch.equal(out.labelled_embeddings, feats.train.x[:10])
    hidden = trainer.build_net(compose(frozen("x", "model.net.hidden=32"), tmp_path), 10, feats.input_shape)
    assert compute_outputs(hidden, feats.train, idx, {"embeddings"}).embeddings.shape == (len(idx), 32)


def test_alframe_features_writes_dataset_files_a_run_can_read(tmp_path, data, capsys):
    from alframe.cli.features import main
    from alframe.data.features import features

    ckpt = small_cnn(tmp_path / "cnn.pt")
    args = [str(tmp_path / "feats"), "model=frozen", "model.backbone.name=alframe.models.cnn.SmallCNN",
            "model.backbone.weights=null", f"model.backbone.checkpoint={ckpt}"]
    assert main(args) == 0
    assert "train.npz: 1347 x 128" in capsys.readouterr().out
    got = features(str(tmp_path / "feats" / "train.npz"), str(tmp_path / "feats" / "test.npz"), normalize=False)
    cached = frozen_data(compose(frozen(ckpt, "model.backbone.standardize=false"), tmp_path), data, tmp_path / "run")
    assert torch.equal(got.train.x, cached.train.x) and torch.equal(got.test.x, cached.test.x)
    np.testing.assert_array_equal(got.targets, data.targets)
    other = small_cnn(tmp_path / "other.pt", seed=5)
    assert main([*args[:-1], f"model.backbone.checkpoint={other}"]) == 2  # the folder holds another backbone's
    assert "computed for another backbone" in capsys.readouterr().err
