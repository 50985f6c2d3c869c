"""``smoke=true``: shrink any experiment to one tiny round, to check that a config runs end to end.

``alframe experiment=badge2020_cifar10 smoke=true`` keeps the experiment's dataset, model,
strategy, oracle and tracking, and changes only sizes: one query round, one epoch, at most 20
initial labels and 10 per round, at most 64 scored pool samples, at most 5 steps or 64 samples per
epoch for the step and fixed-length protocols, one self-supervised epoch (``ssl``), a subset of the data
(torchvision datasets: 300 training / 100 test samples, validation at most 20) and at most 4 MC
samples. The result is a real run, not a measurement: it is logged to its own MLflow experiment
``<mlflow.experiment_name>-smoke`` (tag ``alframe.smoke=true``), so smoke runs never mix with the
budget curves of the real experiment.
"""

from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf, open_dict

#: upper limits a smoke run applies (None: set to this value)
SMOKE_LIMITS = {
    "loop.initial_size": 20,
    "loop.query_size": 10,
    "loop.pool_subset": 64,
    "trainer.max_epochs": 1,
    "trainer.min_epochs": 1,
    "dataset.train_size": 300,
    "dataset.test_size": 100,
    "dataset.val_size": 20,
    "strategy.mc_samples": 4,
    "ssl.epochs": 1,
}
#: suffix of the MLflow experiment smoke runs are logged to
SMOKE_EXPERIMENT_SUFFIX = "-smoke"
#: upper limits applied only where the config sets a value (null keeps its meaning: "off")
SMOKE_LIMITS_IF_SET = {"trainer.steps_per_round": 5, "trainer.epoch_samples": 64}
#: values a smoke run sets outright
SMOKE_SET = {"loop.rounds": 1, "loop.budget": None, "loop.target_accuracy": None,
             "trainer.early_stopping_patience": None}


def apply_smoke(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` shrunk for a smoke run (see the module doc).

    Keys in :data:`SMOKE_LIMITS` are lowered to the limit (a null ``loop.pool_subset`` or
    ``dataset.train_size`` becomes the limit); keys the config does not have are left out, so
    datasets without ``train_size`` (e.g. ``digits``) keep their size. ``mlflow.experiment_name``
    gets the suffix ``-smoke``.
    """
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for key, limit in SMOKE_LIMITS.items():
            if OmegaConf.select(out, key, default="__missing__") == "__missing__":
                continue
            value = OmegaConf.select(out, key)
            OmegaConf.update(out, key, limit if value is None else min(int(value), limit), merge=False)
        for key, limit in SMOKE_LIMITS_IF_SET.items():
            value = OmegaConf.select(out, key, default=None)
            if value is not None:
                OmegaConf.update(out, key, min(int(value), limit), merge=False)
        for key, value in SMOKE_SET.items():
            if OmegaConf.select(out, key, default="__missing__") != "__missing__":
                OmegaConf.update(out, key, value, merge=False)
        name = str(out.mlflow.experiment_name)
        if not name.endswith(SMOKE_EXPERIMENT_SUFFIX):
            out.mlflow.experiment_name = name + SMOKE_EXPERIMENT_SUFFIX
    return out
