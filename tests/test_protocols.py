"""Training protocols (alframe/protocols.py, conf/trainer/*.yaml): fixed steps per round,
BatchBALD's fixed-length epochs with early stopping and best-epoch restore, Gal et al.'s
labelled-set-scaled weight decay, and their config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alframe.config.checks import validate_static
from alframe.data.base import load_data
from alframe.errors import ConfigError
from alframe.rundir.state import PoolState
from alframe.scoring.evaluate import evaluate
from alframe.training import protocols
from alframe.training.protocols import FixedLengthSampler, scaled_weight_decay
from alframe.training.trainer import build_net, fit

from .conftest import compose


def labelled_state(data, n: int, seed: int = 0) -> PoolState:
    """A pool state with ``n`` random training samples labelled with their stored labels."""
    state = PoolState.create(data.n_train, holdout=data.val_idx)
    idx = np.sort(np.random.default_rng(seed).choice(state.pool_idx, size=n, replace=False))
    state.label(idx, data.targets[idx], 0)
    return state


@pytest.fixture
def captured(monkeypatch):
    """The Trainer and LightningModule of the last fit() (read where the loop restores weights)."""
    seen = {}
    real = protocols.restore_best

    def spy(trainer, module):
        seen["trainer"], seen["module"] = trainer, module
        seen["epoch"] = real(trainer, module)
        return seen["epoch"]

    monkeypatch.setattr(protocols, "restore_best", spy)
    return seen


def test_fixed_length_sampler_repeats_each_sample_evenly_and_is_seeded():
    s = FixedLengthSampler(20, 5056, torch.Generator().manual_seed(3))
    idx = list(s)
    assert len(idx) == len(s) == 5056
    counts = np.bincount(idx, minlength=20)
    assert counts.sum() == 5056 and set(counts) == {252, 253}  # 5056 = 20 * 252 + 16
    assert list(FixedLengthSampler(20, 5056, torch.Generator().manual_seed(3))) == idx
    assert list(FixedLengthSampler(20, 5056, torch.Generator().manual_seed(4))) != idx
    short = list(FixedLengthSampler(30, 10, torch.Generator().manual_seed(0)))  # more labels than length:
    assert sorted(short) == list(range(30))  # one shuffled pass, nothing left out
    with pytest.raises(ValueError, match="length=0"):
        FixedLengthSampler(5, 0)


@pytest.mark.parametrize("n_labelled", [20, 300])
def test_steps_protocol_trains_the_same_number_of_steps_whatever_the_labelled_size(tmp_path, captured, n_labelled):
    cfg = compose(["trainer=steps", "trainer.steps_per_round=13", "model.batch_size=16"], tmp_path)
    data = load_data(cfg.dataset)
    fit(cfg, data, labelled_state(data, n_labelled), 0, tmp_path)
    assert captured["trainer"].global_step == 13
    assert captured["epoch"] is None  # nothing to restore in this protocol


def test_early_stopping_alone_writes_no_checkpoints(tmp_path, captured):
    cfg = compose(["trainer.max_epochs=4", "trainer.early_stopping_patience=2"], tmp_path)
    data = load_data(cfg.dataset)
    fit(cfg, data, labelled_state(data, 20), 0, tmp_path)
    assert captured["trainer"].checkpoint_callback is None and captured["epoch"] is None
    assert not (tmp_path / "checkpoints").exists()


def test_batchbald_protocol_fixed_length_epochs_early_stopping_and_best_weights(tmp_path, captured):
    cfg = compose(["trainer=batchbald2019", "trainer.epoch_samples=96", "model.batch_size=32",
                   "dataset.val_size=200"], tmp_path)
    assert (cfg.trainer.max_epochs, cfg.trainer.early_stopping_patience, cfg.trainer.restore_best) == (30, 3, True)
    data = load_data(cfg.dataset)
    net = fit(cfg, data, labelled_state(data, 20), 0, tmp_path)
    trainer = captured["trainer"]
    epochs = trainer.current_epoch
    assert trainer.global_step == 3 * epochs  # 96 samples = 3 batches of 32 per epoch, from 20 labels
    best = captured["epoch"]
    assert best is not None and 0 <= best < epochs
    if epochs < 30:  # stopped early: patience 3 epochs without a gain after the best one
        assert epochs - 1 - best == 3
    # the returned network is the best epoch's, not the last one's
    val = evaluate(net, data.validation_set())["accuracy"]
    assert val == pytest.approx(float(trainer.checkpoint_callback.best_model_score), abs=1e-6)
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))  # the checkpoint file is removed


def test_gal_weight_decay_is_keras_l2_over_the_labelled_size_on_the_dense_layer(tmp_path):
    cfg = compose(["trainer=gal2017", "model=gal_cnn", "dataset=digits"], tmp_path)
    assert cfg.trainer.max_epochs == 50 and list(cfg.trainer.weight_decay_params) == ["head.1.weight"]
    assert scaled_weight_decay(3.5, 70) == pytest.approx(0.1)  # Keras l2(3.5/70) = torch wd 2 * 0.05
    from hydra.utils import instantiate

    for n in (20, 350):
        net = build_net(cfg, (d := load_data(cfg.dataset)).num_classes, d.input_shape)
        opt = protocols.optimizer_factory(cfg, instantiate(cfg.model.optimizer), net, n)(net.parameters())
        scaled, rest = opt.param_groups
        assert scaled["weight_decay"] == pytest.approx(7.0 / n)
        assert [p is net.head[1].weight for p in scaled["params"]] == [True]
        assert rest["weight_decay"] == 0.0 and len(rest["params"]) == len(list(net.parameters())) - 1
    # the decay acts: one Adam step with zero loss gradient shrinks only the scaled weight
    net = build_net(cfg, (d := load_data(cfg.dataset)).num_classes, d.input_shape)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = protocols.optimizer_factory(cfg, instantiate(cfg.model.optimizer), net, 20)(net.parameters())
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = net.state_dict()
    assert after["head.1.weight"].abs().sum() < before["head.1.weight"].abs().sum()
    assert all(torch.equal(after[k], before[k]) for k in before if k != "head.1.weight")


@pytest.mark.parametrize("override, message", [
    ("trainer.steps_per_round=0", "trainer.steps_per_round=0 is invalid: must be an integer >= 1 or null"),
    ("trainer.epoch_samples=-5", "trainer.epoch_samples=-5 is invalid"),
    ("trainer.protocol=keras", "trainer.protocol='keras' is invalid: must be one of"),
    ("trainer.weight_decay_per_label=-1", "trainer.weight_decay_per_label=-1.0 is invalid"),
])
def test_bad_protocol_values_are_config_errors(tmp_path, override, message):
    cfg = compose(["trainer=batchbald2019", override], tmp_path)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate_static(cfg)


def test_a_value_of_the_wrong_type_is_refused_when_the_config_is_composed(tmp_path):
    """The trainer schema (alframe/schema.py) types restore_best as a bool."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        compose(["trainer=batchbald2019", "trainer.restore_best=maybe"], tmp_path)
    assert "trainer.restore_best=maybe" in str(e.value)


def test_protocol_errors_that_need_the_model_or_data(tmp_path):
    cfg = compose(["trainer=steps", "trainer.epoch_samples=64"], tmp_path)
    with pytest.raises(ConfigError, match="both set"):
        validate_static(cfg)
    cfg = compose(["trainer=gal2017", "trainer.weight_decay_params=[nothing.*]"], tmp_path)
    data = load_data(cfg.dataset)
    with pytest.raises(ConfigError, match=r"matches no parameter of the model; its parameters are \['trunk"):
        fit(cfg, data, labelled_state(data, 20), 0, tmp_path)
    cfg = compose(["trainer=batchbald2019", "dataset.val_size=0"], tmp_path)
    data = load_data(cfg.dataset)
    with pytest.raises(ConfigError, match="restore_best=true needs a validation split"):
        fit(cfg, data, labelled_state(data, 20), 0, tmp_path)


@pytest.mark.slow  # a fresh interpreter imports torch, Lightning and Hydra (~40 s on the loaded box)
def test_cli_prints_protocol_errors_before_training(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "alframe.cli.run", "trainer=steps", "trainer.steps_per_round=0",
                          f"paths.output_root={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "alframe: error: trainer.steps_per_round=0 is invalid" in out.stderr
