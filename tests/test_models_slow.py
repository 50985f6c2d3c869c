"""Realistic runs, one per model, on real digits in the model's intended input format
(``-m slow``; minutes on CPU). Each asserts the network actually learns through the AL loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import compose_shared, shared_store, write_cifar, write_folder, write_mnist_like


@pytest.fixture
def store(tmp_path_factory) -> Path:
    """The MLflow store shared by this session's dataset/model end-to-end runs."""
    return shared_store(tmp_path_factory)

pytestmark = pytest.mark.slow

#: model -> (dataset writer kind, loop/trainer overrides, minimum final test accuracy).
#: Measured once on 2 busy CPU cores (labels 20/40/60/80, folder 9/29/49/69; chance 0.1, folder 0.33):
#: small_cnn .66 .66 .78 .85 | gal_cnn .75 .80 .88 .92 | batchbald_cnn .69 .84 .89 .94 |
#: lenet5 .68 .76 .81 .88 | image_classifier .94 .93 1.0 1.0 | resnet18 .68 .41 .89 .79 (~9 min).
RUNS = {
    "small_cnn": ("mnist", ["trainer.max_epochs=30"], 0.75),
    "gal_cnn": ("mnist", ["trainer.max_epochs=30"], 0.85),
    "batchbald_cnn": ("mnist", ["trainer.max_epochs=100"], 0.85),  # 1-2 steps/epoch at batch 64
    "lenet5": ("mnist", ["trainer.max_epochs=100"], 0.80),
    "image_classifier": ("folder", ["trainer.max_epochs=20"], 0.90),
    "resnet18": ("cifar", ["trainer.max_epochs=30", "model.batch_size=32"], 0.60),  # BN on few labels: noisy
}


def data_overrides(kind: str, tmp_path) -> list[str]:
    if kind == "mnist":  # 1,400 train / 397 official-test-file digits, 28x28
        write_mnist_like(tmp_path / "data", n_train=1400, n_test=397)
        return ["dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.download=false", "dataset.val_size=100"]
    if kind == "cifar":  # 32x32 RGB digits in CIFAR-10's pickled-batch format
        write_cifar(tmp_path / "data", n_train=600, n_test=200)
        return ["dataset=cifar10", f"dataset.root={tmp_path / 'data'}", "dataset.download=false",
                "dataset.val_size=50", "dataset.verify_checksums=false"]
    # 64x64 RGB PNGs of three digit classes in class folders
    write_folder(tmp_path / "photos", per_class=150, size=64, corrupt=False)
    return ["dataset=image_folder", f"dataset.root={tmp_path / 'photos'}", "dataset.image_size=64",
            "dataset.test_size=90"]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_realistic_run_learns(name, tmp_path, store):
    from alframe.loop.experiment import run_experiment

    kind, extra, minimum = RUNS[name]
    initial = 9 if kind == "folder" else 20
    cfg = compose_shared([*data_overrides(kind, tmp_path), f"model={name}", "strategy=entropy",
                          f"loop.initial_size={initial}", "loop.initial_balanced=true", "loop.query_size=20",
                          "loop.rounds=3", *extra, f"mlflow.experiment_name=slow_{name}"], tmp_path / "out", store)
    res = run_experiment(cfg, tmp_path / "out" / "job")
    accs = [h["test_accuracy"] for h in res.history]
    print(name, [h["n_labelled"] for h in res.history], [round(a, 3) for a in accs])
    assert [h["n_labelled"] for h in res.history] == [initial + 20 * r for r in range(4)]
    assert res.final_accuracy >= minimum, f"{name}: accuracies {accs}"
