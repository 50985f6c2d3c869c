"""Self-supervised pool features (``ssl=simclr``): a known answer on real digits, the pool only,
determinism, the cache (once, shared, never foreign, never torn) and the config's refusals."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

pytest.importorskip("lightly")

from alframe.config.settings import settings_of  # noqa: E402
from alframe.data.digits import digits  # noqa: E402
from alframe.errors import ConfigError  # noqa: E402
from alframe.training import ssl as ssl_train  # noqa: E402
from alframe.training import ssl_cache  # noqa: E402

from .conftest import REPO, compose  # noqa: E402

#: a few epochs of SimCLR on scikit-learn's digits: seconds on one CPU thread
SMALL = ["ssl=simclr", "ssl.epochs=5", "ssl.batch_size=128", "ssl.proj_dim=32", "ssl.threads=1"]


def spec_of(out: Path, *overrides: str) -> dict:
    """The ``ssl`` settings of the composed config (``cache_dir`` under ``out``)."""
    return OmegaConf.to_container(compose([*SMALL, *overrides], out).ssl, resolve=True)


class Recorder:
    """Replaces ``PoolViews`` for the duration of a fixture: records what training is given and
    every index it reads."""

    def __init__(self):
        self.made, self.read = [], set()

    def cls(self):
        rec, base_cls = self, ssl_train.PoolViews

        class Recording(base_cls):
            def __init__(self, base, idx, *a, **k):
                super().__init__(base, idx, *a, **k)
                rec.made.append((base, np.array(idx)))

            def __getitem__(self, j):
                rec.read.add(int(self.idx[j]))
                return super().__getitem__(j)

        return Recording


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One SimCLR encoder of the digits pool, trained through the cache at one thread."""
    out = tmp_path_factory.mktemp("ssl")
    data, spec, rec = digits(), spec_of(out), Recorder()
    original = ssl_train.PoolViews
    ssl_train.PoolViews = rec.cls()
    try:
        enc = ssl_cache.pool_encoder(spec, data, spec["cache_dir"], threads=1, quiet=True)
    finally:
        ssl_train.PoolViews = original
    return data, spec, enc, rec


def no_training(*a, **k):
    raise AssertionError("the encoder was trained again")


def counting(monkeypatch) -> list:
    """Replace training with a fast fake (a fresh encoder); the list counts the calls."""
    calls = []

    def fake(spec, data, *a, **k):
        calls.append(data.fingerprint)
        net, name, kwargs = ssl_train.build_encoder(spec, data.num_classes, data.input_shape)
        return net.eval(), {"encoder": name, "encoder_kwargs": kwargs, "dim": net.embedding_dim, "losses": [],
                            "seconds": 0.0, "cpu_seconds": 0.0, "threads": 1}

    monkeypatch.setattr(ssl_train, "train_encoder", fake)
    return calls


def test_two_views_of_an_image_are_closer_than_two_images(trained):
    """The known answer of contrastive learning: after training, the features of two augmentations
    of one image are closer (cosine) than those of different images, on average by a margin and
    for most pairs, far more so than with the untrained encoder."""
    data, spec, enc, _ = trained
    pool = ssl_train.pool_indices(data)[:200]
    mean, std = data.extras["mean"], data.extras["std"]
    views = ssl_train.PoolViews(data.train, pool, ssl_train.view_transform(spec, data.input_shape), mean, std)
    torch.manual_seed(123)
    a, b = (torch.stack(v) for v in zip(*[views[j] for j in range(len(pool))], strict=True))
    torch.manual_seed(1)
    untrained = ssl_train.build_encoder(spec, data.num_classes, data.input_shape)[0].eval()
    net = enc.load(data.num_classes, data.input_shape)
    margins = {}
    for name, model in (("trained", net), ("untrained", untrained)):
        with torch.no_grad():
            fa = F.normalize(model.embed((a - mean[0]) / std[0]), dim=1)
            fb = F.normalize(model.embed((b - mean[0]) / std[0]), dim=1)
        sim = fa @ fb.T
        pos, off = sim.diag(), ~torch.eye(len(sim), dtype=torch.bool)
        margins[name] = float(pos.mean() - sim[off].mean())
        wins = float((pos[:, None] > sim)[off].float().mean())  # pairs (i, j != i): same image closer
        if name == "trained":
            assert margins[name] > 0.08, margins
            assert wins > 0.85, wins
    assert margins["trained"] > 3 * margins["untrained"], margins


def test_training_sees_exactly_the_pool(trained):
    """The dataset given to training holds exactly the pool's indices (train source minus the
    validation split), over the train source; the test split is never read."""
    data, _, enc, rec = trained
    pool = np.setdiff1d(np.arange(data.n_train), data.val_idx)
    assert len(rec.made) == 1
    base, idx = rec.made[0]
    assert base is data.train and base is not data.test
    np.testing.assert_array_equal(idx, pool)
    assert rec.read == set(pool.tolist())  # every pool image, nothing else
    assert not set(data.val_idx.tolist()) & rec.read
    assert enc.info["n_pool"] == len(pool) == data.n_train - len(data.val_idx)


def test_the_cache_is_computed_once_and_reused(trained, monkeypatch):
    """A second call reads the encoder: no training, the same file, the same features."""
    data, spec, enc, _ = trained
    assert enc.trained
    monkeypatch.setattr(ssl_train, "train_encoder", no_training)
    again = ssl_cache.pool_encoder(spec, data, spec["cache_dir"])
    assert not again.trained and again.path == enc.path and again.fingerprint == enc.fingerprint
    folder = enc.path.parent
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.json", "encoder.pt"]  # no temp file
    info = json.loads((folder / "encoder.json").read_text())
    assert info["fingerprint"] == enc.fingerprint and info["n_pool"] == 1247 and len(info["losses"]) == 5
    assert set(info["parts"]["versions"]) == {"torch", "torchvision", "pytorch_lightning", "lightly"}
    # threads, workers and the cache folder are not part of what the encoder is
    assert ssl_cache.pool_encoder({**spec, "threads": 2, "num_workers": 1}, data, spec["cache_dir"]).path == enc.path
    x1, _ = ssl_cache.encoder_features(enc, data)
    x2, t2 = ssl_cache.encoder_features(again, data)
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == (data.n_train, 128) and t2.shape == (len(data.test), 128) and x1.dtype == np.float32


def test_a_foreign_cache_is_never_used(trained, monkeypatch, tmp_path):
    """Other data, other settings or another seed: another fingerprint, trained anew. An encoder
    copied into this fingerprint's folder, or edited weights, are not used."""
    data, spec, enc, _ = trained
    calls = counting(monkeypatch)
    other = digits(split_seed=1)  # another validation split: another pool
    fp = ssl_cache.fingerprint(ssl_cache.fingerprint_parts(spec, data))
    assert fp == enc.fingerprint
    for d, s in ((other, spec), (data, {**spec, "seed": 1}), (data, {**spec, "temperature": 0.2})):
        assert ssl_cache.fingerprint(ssl_cache.fingerprint_parts(s, d)) != fp
    cache = tmp_path / "cache"
    got = ssl_cache.pool_encoder(spec, other, cache)
    assert got.trained and len(calls) == 1 and got.fingerprint != enc.fingerprint
    # the digits encoder copied in place of the other data's
    target = got.path.parent
    for name in ("encoder.pt", "encoder.json"):
        (target / name).write_bytes((enc.path.parent / name).read_bytes())
    assert ssl_cache.read_cached(target, got.fingerprint) is None
    assert ssl_cache.pool_encoder(spec, other, cache).trained and len(calls) == 2
    # weights edited after the fact (checksum): trained again
    with open(got.path, "ab") as f:
        f.write(b"\0")
    assert ssl_cache.pool_encoder(spec, other, cache).trained and len(calls) == 3
    assert not ssl_cache.pool_encoder(spec, other, cache).trained and len(calls) == 3


def test_training_is_deterministic_under_a_seed_at_one_thread(tmp_path):
    """The same seed gives the same weights bit for bit; another seed other weights; the run's own
    random streams are left as they were."""
    data = digits()
    spec = spec_of(tmp_path, "ssl.epochs=1")
    torch.manual_seed(99)
    before = torch.random.get_rng_state()
    a, info = ssl_train.train_encoder(spec, data, threads=1, quiet=True)
    assert torch.equal(torch.random.get_rng_state(), before)
    b, _ = ssl_train.train_encoder(spec, data, threads=1, quiet=True)
    c, _ = ssl_train.train_encoder({**spec, "seed": 1}, data, threads=1, quiet=True)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert info["threads"] == 1 and info["epochs"] == 1


def test_a_crash_leaves_no_half_file(trained, monkeypatch, tmp_path):
    """Training that fails writes nothing and frees the lock; the next call trains and writes both
    files; an encoder.pt without its description (a crash between the two) is trained again."""
    data, spec, _, _ = trained

    def crash(*a, **k):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(ssl_train, "train_encoder", crash)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError):
        ssl_cache.pool_encoder(spec, data, cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    calls = counting(monkeypatch)
    got = ssl_cache.pool_encoder(spec, data, cache)  # the lock was released
    assert got.trained and len(calls) == 1
    (got.path.parent / "encoder.json").unlink()
    assert ssl_cache.pool_encoder(spec, data, cache).trained and len(calls) == 2


KILLED = """
import sys
from omegaconf import OmegaConf
from alframe.data.digits import digits
from alframe.training.ssl_cache import pool_encoder
spec = OmegaConf.to_container(OmegaConf.load(sys.argv[1]), resolve=True)
pool_encoder(spec, digits(), spec["cache_dir"], threads=1)
"""


def test_a_killed_training_leaves_no_file_and_no_held_lock(tmp_path):
    """SIGKILL at the end of the first epoch (a power cut): no encoder file, no temp file, and the
    lock is free for the next job."""
    from filelock import FileLock

    spec = spec_of(tmp_path, "ssl.epochs=2")
    OmegaConf.save(OmegaConf.create(spec), tmp_path / "ssl.yaml")
    env = {**os.environ, "ALFRAME_KILL_AT": "ssl_epoch:1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path / "ssl.yaml")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    cache = Path(spec["cache_dir"])
    locks = list(cache.glob("*.lock"))
    assert len(locks) == 1 and [p.name for p in cache.rglob("*") if p.is_file() and p not in locks] == []
    FileLock(str(locks[0])).acquire(timeout=0)  # not held


def _job(spec: dict) -> dict:
    from alframe.data.digits import digits as load
    from alframe.training.ssl_cache import pool_encoder

    torch.set_num_threads(1)
    enc = pool_encoder(spec, load(), spec["cache_dir"], threads=1, quiet=True)
    return {"trained": enc.trained, "path": str(enc.path), "sha1": enc.info["sha1"]}


def test_parallel_jobs_train_the_encoder_once(tmp_path):
    """Two jobs of a sweep start together: one trains, the other waits on the lock and reads it."""
    spec = spec_of(tmp_path, "ssl.epochs=1")
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_job, [spec, spec])
    assert sorted(r["trained"] for r in results) == [False, True], results
    assert results[0]["path"] == results[1]["path"] and results[0]["sha1"] == results[1]["sha1"]


def test_the_encoder_becomes_the_frozen_backbone(trained, monkeypatch):
    """``use_ssl_encoder`` fills model.backbone with the cached encoder (the frozen-feature mode's
    user-checkpoint form); with that mode present its backbone gives the encoder's features."""
    data, spec, enc, _ = trained
    out = Path(spec["cache_dir"]).parents[1]
    cfg = compose([*SMALL, "+model.backbone={name: resnet18, weights: DEFAULT, checkpoint: null, kwargs: {}, "
                   "pixels: null, channels: null, resize: null, mean: null, std: null}"], out)
    assert cfg.ssl.cache_dir == spec["cache_dir"]
    monkeypatch.setattr(ssl_train, "train_encoder", no_training)
    got = ssl_cache.use_ssl_encoder(cfg, data)
    assert got.path == enc.path and not got.trained
    b = cfg.model.backbone
    assert (b.name, b.weights, b.checkpoint, dict(b.kwargs)) == ("alframe.models.ssl.ConvEncoder", None,
                                                                 str(enc.path), {})
    assert b.pixels is None  # the preprocessing keys stay the user's
    try:
        from alframe.models.backbone import build_backbone
    except ImportError:
        pytest.skip("the frozen-feature mode (alframe.models.backbone) is not in this checkout")
    backbone = build_backbone(OmegaConf.to_container(b, resolve=True), data.num_classes, data.input_shape,
                              data.extras["mean"], data.extras["std"])
    x = data.test.x[:64]
    np.testing.assert_allclose(backbone(x).numpy(), ssl_train.encode(enc.load(data.num_classes, data.input_shape),
                                                                     data.test)[:64], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("override, message", [
    ("ssl.epochs=0", "ssl.epochs=0 is invalid: must be an integer >= 1"),
    ("ssl.batch_size=1", "ssl.batch_size=1 is invalid: must be an integer >= 2"),
    ("ssl.temperature=0", "ssl.temperature=0.0 is invalid: must be a number > 0.0"),
    ("ssl.crop_min_scale=1.5", "ssl.crop_min_scale=1.5 is invalid: must be a number in (0.0, 1.0]"),
    ("ssl.rotation=-5", "ssl.rotation=-5.0 is invalid"),
    ("ssl.method=byol", "ssl.method='byol' is invalid: must be one of ['simclr']"),
    ("ssl.encoder=convnet", "ssl.encoder='convnet' is invalid"),
    ("ssl.seed=-1", "ssl.seed=-1 is invalid"),
])
def test_bad_values_are_refused_in_one_line_before_any_work(tmp_path, override, message):
    cfg = compose([*SMALL, override, "+model.backbone={name: null}"], tmp_path)
    with pytest.raises(ConfigError) as e:
        settings_of(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()


def test_ssl_needs_the_frozen_feature_mode_and_lightly(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"ssl=simclr trains the backbone of the frozen-feature mode, but "
                                          r"model=small_cnn has no model.backbone: use model=frozen trainer=head"):
        settings_of(compose(SMALL, tmp_path))
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):  # Hydra checks types and keys against the schema
        compose([*SMALL, "ssl.epochs=many"], tmp_path)
    with pytest.raises(ConfigCompositionException):
        compose([*SMALL, "ssl.epoch=3"], tmp_path)
    monkeypatch.setitem(sys.modules, "lightly", None)  # not installed
    with pytest.raises(ConfigError, match=r"needs lightly, which is not installed: pip install 'alframe\[ssl\]'"):
        ssl_cache.pool_encoder(spec_of(tmp_path), digits(), tmp_path / "cache")


def test_without_ssl_the_config_and_its_fingerprint_are_as_before(tmp_path):
    """``ssl: null`` adds no key: saved runs keep their config fingerprint."""
    cfg = compose([], tmp_path)
    assert "ssl" not in cfg
    settings_of(cfg)
    assert ssl_cache.use_ssl_encoder(cfg, None) is None


def test_encoder_choice_and_refusals():
    net, name, kwargs = ssl_train.build_encoder({"encoder": "auto", "dim": 32}, 10, (1, 28, 28))
    assert name == "alframe.models.ssl.ConvEncoder" and kwargs == {"dim": 32} and net.embedding_dim == 32
    assert ssl_train.encoder_choice({"encoder": "auto"}, (3, 32, 32)) == ("alframe.models.resnet.ResNet18",
                                                                          {"dropout": 0.0})
    with pytest.raises(ConfigError, match=r"ssl.dim=64 is invalid for ssl.encoder=alframe.models.cnn.GalCNN, whose "
                                          r"features have shape \(128,\)"):
        ssl_train.build_encoder({"encoder": "alframe.models.cnn.GalCNN", "dim": 64}, 10, (1, 28, 28))
    with pytest.raises(ConfigError, match="ssl.encoder='torch.nn.Linear' is invalid"):
        ssl_train.build_encoder({"encoder": "torch.nn.Linear"}, 10, (1, 28, 28))
    with pytest.raises(ConfigError, match=r"cannot encode images of shape \(1, 4, 4\)"):
        ssl_train.build_encoder({"encoder": "alframe.models.cnn.GalCNN"}, 10, (1, 4, 4))


def test_alframe_ssl_finds_the_cached_encoder_and_writes_features(trained, monkeypatch, capsys, tmp_path):
    """``alframe-ssl`` with the run's settings reads the encoder the run would use (no training),
    prints how to use it and writes its features as dataset=features files."""
    from alframe.cli.ssl import main

    data, spec, enc, _ = trained
    monkeypatch.setattr(ssl_train, "train_encoder", no_training)
    out = Path(spec["cache_dir"]).parents[1]
    assert main(["--features", str(tmp_path / "f"), *SMALL[1:], f"paths.output_root={out}"]) == 0
    printed = capsys.readouterr().out
    assert f"encoder: {enc.path} (from the cache; fingerprint {enc.fingerprint}, 128 features)" in printed
    assert "use it:  alframe ssl=simclr model=frozen trainer=head ssl.epochs=5" in printed
    assert f"model.backbone.name=alframe.models.ssl.ConvEncoder model.backbone.weights=null " \
           f"model.backbone.checkpoint={enc.path}" in printed
    with np.load(tmp_path / "f" / "train.npz", allow_pickle=False) as z:
        assert z["x"].shape == (data.n_train, 128) and z["x"].dtype == np.float32
        np.testing.assert_array_equal(z["y"], data.targets)
    with np.load(tmp_path / "f" / "test.npz", allow_pickle=False) as z:
        assert z["x"].shape == (len(data.test), 128)
    assert main(["ssl.epochs=0"]) == 2
    assert "alframe-ssl: ssl.epochs=0 is invalid: must be an integer >= 1" in capsys.readouterr().err


def test_a_run_uses_the_cached_encoder_as_its_frozen_backbone(trained, monkeypatch, capsys, store):
    """The whole command (needs the frozen-feature mode): the run reads the cached encoder before
    round 0, its head trains on the encoder's features, and the run's config records the checkpoint."""
    pytest.importorskip("alframe.training.frozen")
    from .helpers import cli_in_process

    data, spec, enc, _ = trained
    monkeypatch.setattr(ssl_train, "train_encoder", no_training)
    out = Path(spec["cache_dir"]).parents[1]
    shutil_copy_store = out / "mlflow.db"
    if not shutil_copy_store.exists():
        shutil_copy_store.write_bytes(store.read_bytes())
    r = cli_in_process(*SMALL, "model=frozen", "trainer=head", "strategy=typiclust", "loop.initial_size=20",
                       "loop.query_size=10", "loop.rounds=2", "mlflow.log_model=false", f"paths.output_root={out}",
                       f"mlflow.tracking_uri=sqlite:///{shutil_copy_store}", cwd=out, monkeypatch=monkeypatch,
                       capsys=capsys)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"ssl: encoder {enc.fingerprint} from the cache" in r.stdout
    run_dir = next(p.parent for p in (out / "runs").rglob("config.yaml"))
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.model.backbone.checkpoint == str(enc.path) and cfg.model.backbone.name == ssl_train.CONV_ENCODER
    assert cfg.model.backbone.weights is None


def test_run_fingerprint_and_smoke(tmp_path):
    """Where and how fast the encoder trains may change on resume; what it is may not. A smoke run
    trains it for one epoch."""
    from alframe.config.fingerprint import config_fingerprint
    from alframe.config.smoke import apply_smoke

    base = config_fingerprint(compose(SMALL, tmp_path))
    assert base == config_fingerprint(compose([*SMALL, "ssl.threads=2", "ssl.num_workers=1",
                                               f"ssl.cache_dir={tmp_path}/elsewhere"], tmp_path))
    assert base != config_fingerprint(compose([*SMALL, "ssl.epochs=6"], tmp_path))
    assert base != config_fingerprint(compose([], tmp_path))  # without ssl
    assert apply_smoke(compose(SMALL, tmp_path)).ssl.epochs == 1
    assert "ssl" not in apply_smoke(compose([], tmp_path))


@pytest.mark.parametrize("override, message", [
    ("model.optimizer.lr=-1", "model.optimizer/model.scheduler (torch.optim.Adam): Invalid learning rate: -1"),
    ("strategy=bald model.net.dropout=0", "strategy=bald samples MC dropout, but model=frozen has no dropout"),
])
def test_what_trains_on_the_features_is_checked_before_the_encoder_is(tmp_path, store, override, message):
    """A bad head, optimiser or strategy stops the run before the minutes of the SSL step: no
    encoder trained, nothing in its cache."""
    from alframe.loop.experiment import run_experiment

    cfg = compose([*SMALL, "model=frozen", "trainer=head", *override.split()], tmp_path)
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_experiment(cfg, tmp_path / "runs" / "job")
    assert not list((tmp_path / "cache").rglob("encoder.pt"))
