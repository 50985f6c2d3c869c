"""Config fingerprints: what identifies a run's configuration, minus the keys that may change on
resume (:data:`RESUMABLE_KEYS`)."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

#: config keys that may change between an interrupted run and its resumption
RESUMABLE_KEYS = ("loop.resume", "loop.rounds", "loop.budget", "paths", "mlflow", "hydra", "trainer.accelerator",
                  "trainer.devices",
                  # how a person is shown the batch, not what is learnt: may change between sessions
                  "oracle.port", "oracle.open_browser", "oracle.timeout_s", "oracle.preview", "oracle.preview_width")


#: keys added after alframe 0.1 with their defaults: dropped from the fingerprint of a
#: run folder saved by 0.1 so that it still resumes (:func:`config_fingerprints`)
ADDED_KEYS = {"trainer._target_": "pytorch_lightning.Trainer", "trainer.protocol": "epochs",
              "trainer.steps_per_round": None, "trainer.epoch_samples": None, "trainer.restore_best": False,
              "trainer.weight_decay_per_label": None, "trainer.weight_decay_params": [], "loop.stop_kappa": None, "loop.stop_window": 3,
              "loop.stop_set_size": 1000, "loop.machine_label_evidence": True,
              "model.module": {"_target_": "alframe.models.lightning.ALClassifier", "_partial_": True}}


def config_fingerprint(cfg: DictConfig, legacy: bool = False) -> str:
    """Hash of the resolved config minus keys that may change on resume (:data:`RESUMABLE_KEYS`);
    ``legacy=True`` also drops :data:`ADDED_KEYS` where they hold their default."""
    container = OmegaConf.to_container(cfg, resolve=True)
    drop = list(RESUMABLE_KEYS)
    if legacy:
        for key, default in ADDED_KEYS.items():
            value = OmegaConf.select(cfg, key)
            if (OmegaConf.to_container(value) if isinstance(value, DictConfig) else value) == default:
                drop.append(key)
    for key in drop:
        parts = key.split(".")
        node = container
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def config_fingerprints(cfg: DictConfig) -> tuple[str, set[str]]:
    """``(fingerprint to save, fingerprints a saved run may carry)``: this version's, and the
    one alframe 0.1 saved for the same config."""
    current = config_fingerprint(cfg)
    return current, {current, config_fingerprint(cfg, legacy=True)}
