"""Paper-reproduction configs (conf/experiment/*.yaml): each composes with its protocol, and runs
one tiny round with ``smoke=true`` on data written in the real on-disk format."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from alframe.config.smoke import apply_smoke

from .conftest import CONFIG_DIR
from .helpers import write_cifar, write_mnist_like

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))

#: protocol values each paper config must keep (from the papers; see the configs' comments)
PROTOCOL = {
    "gal2017_mnist": {"dataset.name": "mnist", "model.name": "gal_cnn", "strategy.name": "bald",
                      "loop.initial_size": 20, "loop.initial_balanced": True, "loop.query_size": 10,
                      "loop.rounds": 100, "dataset.val_size": 100, "loop.pool_subset": 2000,
                      "trainer.protocol": "gal2017", "trainer.max_epochs": 50, "model.batch_size": 128,
                      "trainer.weight_decay_per_label": 3.5, "trainer.weight_decay_params": ["head.1.weight"]},
    "batchbald2019_mnist": {"dataset.name": "mnist", "model.name": "batchbald_cnn", "strategy.name": "batchbald",
                            "loop.initial_size": 20, "loop.query_size": 10, "trainer.protocol": "batchbald2019",
                            "trainer.epoch_samples": 5056, "trainer.max_epochs": 30,
                            "trainer.early_stopping_patience": 3, "trainer.restore_best": True,
                            "strategy.consistent_dropout": True, "model.batch_size": 64,
                            "loop.consistent_dropout": True, "loop.pool_subset": None},
    "batchbald2019_repeated_mnist": {"dataset.name": "repeated_mnist", "dataset.repeat": 3,
                                     "dataset.repeat_noise_std": 0.1, "trainer.protocol": "batchbald2019",
                                     "strategy.name": "batchbald", "loop.rounds": 30, "loop.pool_subset": None,
                                     "loop.consistent_dropout": True},
    # CPU-sized variants keep the network, protocol and acquisition; only sizes shrink
    "gal2017_mnist_cpu": {"model.name": "gal_cnn", "trainer.protocol": "gal2017", "loop.initial_size": 20,
                          "loop.query_size": 10, "loop.initial_balanced": True, "dataset.val_size": 100},
    "batchbald2019_mnist_cpu": {"model.name": "batchbald_cnn", "trainer.protocol": "batchbald2019",
                                "trainer.epoch_samples": 5056, "trainer.early_stopping_patience": 3,
                                "trainer.restore_best": True, "strategy.consistent_dropout": True,
                                "loop.query_size": 10, "dataset.name": "mnist"},
    "batchbald2019_repeated_mnist_cpu": {"dataset.name": "repeated_mnist", "dataset.repeat": 3,
                                         "trainer.protocol": "batchbald2019", "loop.rounds": 18,
                                         "loop.pool_subset": None, "dataset.train_size": 1100,
                                         "loop.consistent_dropout": True},
    # alframe's own cold-start protocol (experiments/coldstart_mnist/README.md)
    "coldstart_mnist": {"dataset.name": "mnist", "model.name": "frozen", "ssl.method": "simclr",
                        "loop.initial_size": 10, "loop.initial_by_strategy": True, "loop.query_size": 10,
                        "loop.rounds": 9, "trainer.protocol": "steps", "strategy.name": "typiclust"},
    "coreset2018_cifar10": {"dataset.name": "cifar10", "model.name": "resnet18", "strategy.name": "coreset",
                            "loop.initial_size": 5000, "loop.query_size": 5000,
                            "model.optimizer._target_": "torch.optim.SGD"},
    "badge2020_cifar10": {"dataset.name": "cifar10", "model.name": "resnet18", "strategy.name": "badge",
                          "loop.initial_size": 100, "loop.query_size": 1000,
                          "model.optimizer._target_": "torch.optim.Adam"},
    "lueth2023_cifar10_low": {"dataset.name": "cifar10", "model.name": "resnet18", "loop.initial_size": 50,
                              "loop.initial_balanced": True, "loop.query_size": 50, "loop.rounds": 10,
                              "model.optimizer._target_": "torch.optim.SGD", "model.batch_size": 64},
}


def _compose(overrides, out: Path, store: Path):  # noqa: F811 (fixture)
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[
            f"paths.output_root={out}", f"mlflow.tracking_uri=sqlite:///{store}", *overrides])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Tiny MNIST (IDX) and CIFAR-10 (pickled batches) copies in one folder."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root, n_train=200, n_test=40)
    write_cifar(root, n_train=200, n_test=40)
    return root


def test_every_paper_has_a_config_and_a_readme():
    assert set(PROTOCOL) <= set(EXPERIMENTS)
    repo = Path(CONFIG_DIR).parent
    for name in EXPERIMENTS:
        text = (Path(CONFIG_DIR) / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_"), name
        assert "Deviations" in text, name
        # its README: experiments/<name>/README.md, or the paper's README the config names (variants)
        import re

        named = re.findall(r"experiments/([a-z0-9_]+)/README\.md", text)
        readme = repo / "experiments" / (name if (repo / "experiments" / name).is_dir() else named[0]) / "README.md"
        assert readme.is_file(), name
        assert f"experiment={name}" in readme.read_text(), (name, readme)  # the README shows how to run it


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_its_protocol(name, tmp_path):
    cfg = _compose([f"experiment={name}"], tmp_path, tmp_path / "m.db")
    assert cfg.mlflow.experiment_name == name
    for key, value in PROTOCOL.get(name, {}).items():
        assert OmegaConf.select(cfg, key) == value, (name, key)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_every_paper_config_names_its_protocol(tmp_path):
    for name in EXPERIMENTS:
        cfg = _compose([f"experiment={name}"], tmp_path, tmp_path / "m.db")
        want = "gal2017" if name.startswith("gal2017") else "batchbald2019" if name.startswith("batchbald") \
            else "steps" if name.startswith(("frozen_features", "coldstart")) else "epochs"
        assert cfg.trainer.protocol == want, name
        own = (Path(CONFIG_DIR) / "experiment" / f"{name}.yaml").read_text()
        assert "override /trainer:" in own or "protocol:" in own or name.endswith("_cpu") \
            or "- batchbald2019_mnist" in own, name  # its own file, or the paper config it derives from


def test_smoke_shrinks_sizes_only(tmp_path):
    cfg = _compose(["experiment=batchbald2019_mnist"], tmp_path, tmp_path / "m.db")
    small = apply_smoke(cfg)
    assert (small.loop.rounds, small.loop.initial_size, small.loop.query_size, small.loop.pool_subset) == (1, 20, 10, 64)
    assert (small.trainer.max_epochs, small.trainer.min_epochs, small.trainer.early_stopping_patience) == (1, 1, None)
    assert small.trainer.epoch_samples == 64 and cfg.trainer.epoch_samples == 5056  # protocol kept, epochs shrunk
    assert small.trainer.steps_per_round is None  # an unset protocol key stays unset
    assert (small.dataset.train_size, small.dataset.test_size, small.dataset.val_size) == (300, 100, 20)
    assert small.strategy.mc_samples == 4 and small.strategy.name == "batchbald"
    assert small.model == cfg.model and small.loop.initial_balanced is True
    assert small.mlflow.experiment_name == "batchbald2019_mnist-smoke"  # never mixed with real runs
    assert apply_smoke(small).mlflow.experiment_name == "batchbald2019_mnist-smoke"
    assert cfg.loop.rounds == 30 and cfg.mlflow.experiment_name == "batchbald2019_mnist"  # the original is untouched
    digits = apply_smoke(_compose([], tmp_path, tmp_path / "m.db"))
    assert "train_size" not in digits.dataset and digits.loop.pool_subset == 64


#: CIFAR ResNet smoke rounds take 40-75 s on 2 loaded cores: in `make test-all`
HEAVY_SMOKE = {"badge2020_cifar10", "coreset2018_cifar10", "lueth2023_cifar10_low"}


#: experiments on feature files (dataset=features): their runs are tests/test_frozen.py's
FEATURE_FILES = {"frozen_features_mnist"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY_SMOKE else n
                                  for n in EXPERIMENTS if n not in FEATURE_FILES])
def test_experiment_runs_one_smoke_round(name, tmp_path, data_root, store):  # noqa: F811 (fixture)
    from alframe.loop.experiment import run_experiment

    cfg = _compose([f"experiment={name}", "smoke=true", f"dataset.root={data_root}", "dataset.download=false",
                    *(["dataset.verify_checksums=false"] if "cifar" in name else [])], tmp_path, store)
    result = run_experiment(cfg, tmp_path / "job")
    assert result.status == "finished"
    first = min(20, cfg.loop.initial_size)
    assert [h["n_labelled"] for h in result.history] == [first, first + 10]
    client = MlflowClient(f"sqlite:///{store}")
    run = client.get_run(result.run_id)
    assert client.get_experiment(run.info.experiment_id).name == f"{name}-smoke"
    assert client.get_experiment_by_name(name) is None  # the real experiment gets no smoke run
    assert run.data.params["smoke"] == "True" and run.data.tags["alframe.smoke"] == "true"
    assert run.data.tags["strategy"] == cfg.strategy.name
    steps = [m.step for m in client.get_metric_history(result.run_id, "test_accuracy")]
    assert sorted(steps) == [first, first + 10]
