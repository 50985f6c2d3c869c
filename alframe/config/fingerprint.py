"""Config fingerprints: what identifies a run's configuration, minus the keys that may change on
resume (:data:`RESUMABLE_KEYS`)."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

#: config keys that may change between an interrupted run and its resumption
RESUMABLE_KEYS = ("loop.resume", "loop.rounds", "loop.budget", "paths", "mlflow", "hydra", "trainer.accelerator",
                  "trainer.devices", "trainer.threads",
                  # where and how fast the ssl encoder is trained, not what it is
                  "ssl.threads", "ssl.num_workers", "ssl.cache_dir",
                  # how a person is shown the batch, not what is learnt: may change between sessions
                  "oracle.port", "oracle.open_browser", "oracle.timeout_s", "oracle.preview", "oracle.preview_width",
                  "oracle.url", "oracle.poll_s", "oracle.wait_limit_s")


#: the round hooks of ``conf/config.yaml`` (``hooks:``), in the order the loop calls them
DEFAULT_HOOKS = {
    "pseudo_labels": {"_target_": "alframe.loop.hooks.PseudoLabels"},
    "target_accuracy": {"_target_": "alframe.loop.hooks.TargetAccuracy"},
    "stabilising_predictions": {"_target_": "alframe.loop.stopping.StopOnStablePredictions"},
    "machine_label_evidence": {"_target_": "alframe.loop.hooks.MachineLabelEvidence"},
    "model_logging": {"_target_": "alframe.loop.hooks.ModelLogging"},
}

#: keys each release added, with their defaults, oldest first: a run folder saved before a key
#: existed still resumes, as its fingerprint is the one without the keys added since
#: (:func:`config_fingerprints`). 0.1 -> 0.1.x, 0.1.x -> 0.2, 0.2 -> 0.3.
ADDED_KEYS = [
    {"trainer._target_": "pytorch_lightning.Trainer", "trainer.protocol": "epochs",
     "trainer.steps_per_round": None, "trainer.epoch_samples": None, "trainer.restore_best": False,
     "trainer.weight_decay_per_label": None, "trainer.weight_decay_params": [], "loop.stop_kappa": None,
     "loop.stop_window": 3, "loop.stop_set_size": 1000, "loop.machine_label_evidence": True,
     "model.module": {"_target_": "alframe.models.lightning.ALClassifier", "_partial_": True}},
    {"hooks": DEFAULT_HOOKS},
    {"loop.initial_by_strategy": False, "strategy.normalize": False},
]


def config_fingerprint(cfg: DictConfig, since: int | None = None) -> str:
    """Hash of the resolved config minus keys that may change on resume (:data:`RESUMABLE_KEYS`);
    ``since=g`` also drops the keys of :data:`ADDED_KEYS` generations ``g`` and later where they
    hold their default (the fingerprint a release before generation ``g`` saved)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    drop = list(RESUMABLE_KEYS)
    for added in ADDED_KEYS[since:] if since is not None else []:
        for key, default in added.items():
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
    """``(fingerprint to save, fingerprints a saved run may carry)``: this release's, and the
    ones earlier releases saved for the same config."""
    current = config_fingerprint(cfg)
    return current, {current, *(config_fingerprint(cfg, since=g) for g in range(len(ADDED_KEYS)))}
