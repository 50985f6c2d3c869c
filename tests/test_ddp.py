"""Several devices per run (``trainer.devices=N``): each round's fit runs Lightning DDP in
processes spawned from the loop's process (``ddp_spawn``); the loop, the oracle, the pool state
and the MLflow run stay in one process. Here: 2 CPU processes with gloo."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

from alframe.rundir.state import PoolState
from alframe.training import protocols
from alframe.training.trainer import build_net, build_trainer, relaunches_command

EXE = Path(sys.executable).with_name("alframe")


def test_two_devices_spawn_from_the_loop_and_one_device_stays_single(make_cfg, tmp_path):
    two = build_trainer(make_cfg("trainer.devices=2"), tmp_path, has_val=False)
    assert isinstance(two.strategy, DDPStrategy) and two.strategy._start_method == "spawn"
    assert two.world_size == 2 and not relaunches_command(two)
    assert two.strategy._get_process_group_backend() == "gloo"  # CPU

    explicit = build_trainer(make_cfg("trainer.devices=2", "trainer.strategy=ddp_spawn"), tmp_path, has_val=False)
    assert explicit.strategy._start_method == "spawn" and explicit.world_size == 2

    one = build_trainer(make_cfg(), tmp_path, has_val=False)
    assert isinstance(one.strategy, SingleDeviceStrategy) and one.world_size == 1


def test_ddp_that_relaunches_the_command_is_refused_before_any_work(make_cfg, tmp_path):
    """Lightning's ``ddp`` re-runs sys.argv per device: every rank would run the whole loop."""
    from alframe.errors import ConfigError
    from alframe.loop.experiment import Experiment

    with pytest.raises(ConfigError) as e:
        Experiment(make_cfg("trainer.devices=2", "trainer.strategy=ddp"), tmp_path / "job")
    assert str(e.value).startswith("trainer.strategy='ddp' with trainer.devices=2 re-launches the alframe command")
    assert "use trainer.strategy=ddp_spawn" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "mlflow.db").exists()  # nothing was started


def test_grouped_weight_decay_optimiser_survives_pickling(make_cfg):
    """ddp_spawn pickles the module with its optimiser factory to every process."""
    cfg = make_cfg("trainer=gal2017", "model=gal_cnn", "dataset=digits")
    net = build_net(cfg, 10, (1, 8, 8))
    make = protocols.optimizer_factory(cfg, torch.optim.Adam, net, n_labelled=35)
    net2, make2 = pickle.loads(pickle.dumps((net, make)))
    opt = make2(net2.parameters())
    decayed = opt.param_groups[0]["params"]
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(protocols.scaled_weight_decay(3.5, 35))
    assert len(decayed) == 1 and decayed[0] is net2.head[1].weight  # the unpickled net's own parameter
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net2.parameters()))


@pytest.mark.slow
def test_two_cpu_processes_end_to_end_on_digits(tmp_path):
    proc = subprocess.run(
        [str(EXE), "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1", "loop.rounds=1",
         f"paths.output_root={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("alframe").experiment_id])
    assert len(runs) == 1  # one MLflow run per job, not one per device
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.devices"] == "2" and run.data.params["trainer.strategy"] == "auto"
    acc = sorted(client.get_metric_history(run.info.run_id, "test_accuracy"), key=lambda m: m.step)
    assert [m.step for m in acc] == [20, 30] and all(0.0 <= m.value <= 1.0 for m in acc)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "score_seconds")] == [20]
    assert run.data.metrics["final_n_labelled"] == 30

    state = PoolState.load(Path(run.data.tags["run_dir"]))
    from alframe.data.digits import digits

    y = digits().targets
    lab = state.labelled_idx
    assert len(lab) == 30 and len(np.unique(lab)) == 30  # 20 initial + 10 queried, once each
    np.testing.assert_array_equal(state.labels[lab], y[lab])  # labels from the stored oracle
    assert (state.labels[state.pool_idx] == -1).all()
    assert sorted(np.unique(state.labelled_round[lab], return_counts=True)[1].tolist()) == [10, 20]


@pytest.mark.slow
def test_sharded_scoring_and_evaluation_equal_one_device():
    """2 CPU processes score 101 samples (odd: the DistributedSampler pads one duplicate) and
    evaluate a labelled set; gathered in order, the outputs equal the single-device ones,
    consistent MC dropout included (its masks do not depend on which rank scores a sample)."""
    from alframe.data.base import TensorImageDataset
    from alframe.models.cnn import GalCNN
    from alframe.scoring.evaluate import evaluate
    from alframe.scoring.pool import compute_outputs
    from alframe.scoring.spread import Spread

    torch.manual_seed(0)
    net = GalCNN(num_classes=4, input_shape=(1, 12, 12), channels=4, kernel=3, hidden=16)
    x = torch.randn(150, 1, 12, 12)
    data = TensorImageDataset(x, np.arange(150) % 4)
    idx = np.sort(np.random.default_rng(0).choice(150, size=101, replace=False))
    labelled = np.setdiff1d(np.arange(150), idx)[:20]
    req = {"probs", "embeddings", "mc_probs", "labelled_embeddings"}
    spread = Spread(accelerator="cpu", devices=2)
    kw = dict(mc_samples=5, batch_size=16, labelled_idx=labelled, mask_seed=123)
    one = compute_outputs(net, data, idx, req, **kw)
    two = compute_outputs(net, data, idx, req, spread=spread, **kw)
    np.testing.assert_array_equal(two.idx, idx)
    for name in ("probs", "embeddings", "mc_probs", "labelled_embeddings"):
        a, b = getattr(one, name), getattr(two, name)
        assert a.shape == b.shape and a.shape[0] in (101, 20)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    test = TensorImageDataset(x[:37], np.arange(37) % 4)
    e1, e2 = evaluate(net, test, 8), evaluate(net, test, 8, spread=spread)
    assert e2["accuracy"] == pytest.approx(e1["accuracy"]) and e2["loss"] == pytest.approx(e1["loss"], rel=1e-5)


def test_ddp_on_one_device_starts_nothing_and_is_accepted(make_cfg, tmp_path):
    one = build_trainer(make_cfg("trainer.strategy=ddp"), tmp_path, has_val=False)
    assert one.world_size == 1 and not relaunches_command(one)


@pytest.mark.slow
def test_two_process_fit_returns_the_trained_weights(make_cfg, tmp_path):
    """The network fit gives back is rank 0's trained one: it has left its initial weights and
    learnt digits well above chance (0.1)."""
    from alframe.data.base import load_data
    from alframe.scoring.evaluate import evaluate
    from alframe.training.seeds import round_seed
    from alframe.training.trainer import fit

    cfg = make_cfg("trainer.devices=2", "trainer.max_epochs=30")
    data = load_data(cfg.dataset)
    state = PoolState.create(len(data.train), holdout=data.val_idx)
    pick = np.random.default_rng(0).choice(state.pool_idx, size=200, replace=False)
    state.label(pick, data.targets[pick], 0, num_classes=data.num_classes)
    torch.manual_seed(round_seed(cfg.seed, 0))
    initial = build_net(cfg, data.num_classes, data.input_shape).state_dict()
    net = fit(cfg, data, state, 0, tmp_path)
    assert any(not torch.equal(v, initial[k]) for k, v in net.state_dict().items())
    assert evaluate(net, data.test, 256)["accuracy"] > 0.6
