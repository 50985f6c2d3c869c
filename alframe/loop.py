"""The active-learning round loop.

One round::

    fit a fresh model on the labelled set (Lightning Trainer)
    evaluate on the fixed test set -> log metrics at step = number of labels
    save state; stop if the rounds or the budget are spent or the pool is empty
    score the pool (or a random subset), once, with what the strategy requires
    strategy picks k pool indices -> oracle labels them -> state.label(...) -> save state

Round 0 trains on the initial labelled set. ``loop.rounds`` counts the query rounds after it.
Randomness of round ``r`` is seeded from ``(seed, r)``, so a resumed run repeats exactly what
an uninterrupted one would have done.
"""

from __future__ import annotations

import csv
import gc
import io
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import auc

from alframe import progress, protocols
from alframe.config import (
    ConfigError,
    config_fingerprint,
    instantiate_checked,
    validate_static,
    validate_with_data,
)
from alframe.data.base import ALData, LabelledView, load_data, make_loader
from alframe.inference import compute_outputs, evaluate
from alframe.models.base import ALNet
from alframe.models.lightning import ALClassifier
from alframe.oracles.base import LabelRequest, LabelResult, Oracle
from alframe.state import PoolState, StateMismatchError, atomic_write
from alframe.strategies.base import QueryStrategy
from alframe.tracking import Tracker, default_tracking_uri, flatten

log = logging.getLogger(__name__)
MODEL_FILE = "last_model.pt"
for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*number of training batches.*")
warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")


@dataclass
class RunResult:
    """What one experiment job produced.

    Attributes:
        run_dir: folder with the pool state, queries.csv, plots and the resolved config.
        run_id: MLflow run id.
        tracking_uri: MLflow tracking URI.
        experiment_name: MLflow experiment name.
        history: one dict per evaluated round (round, n_labelled, test_accuracy, ...).
        status: ``"finished"`` or ``"pending"`` (stopped to wait for labels; resume later).
        final_accuracy: test accuracy of the last evaluated round (NaN if none).
        aubc: area under the budget curve normalised to [0, 1] (NaN if no round evaluated).
        labels_to_target: number of labels at which ``loop.target_metric`` first reached
            ``loop.target_accuracy`` (NaN when not reached or no target is set).
    """

    run_dir: Path
    run_id: str
    tracking_uri: str
    experiment_name: str
    history: list[dict] = field(default_factory=list)
    status: str = "finished"
    final_accuracy: float = float("nan")
    aubc: float = float("nan")
    labels_to_target: float = float("nan")


TARGET_METRICS = ("test_accuracy", "val_accuracy")


def labels_to_target(history: list[dict], target: float | None, metric: str = "test_accuracy") -> float:
    """Number of labels of the first evaluated round whose ``metric`` is >= ``target``.

    Args:
        history: evaluated rounds in order, dicts with ``n_labelled`` and ``metric``.
        target: accuracy in (0, 1], or None.
        metric: ``test_accuracy`` or ``val_accuracy``.

    Returns:
        The number of labels, or NaN when ``target`` is None or never reached.
    """
    if target is None:
        return float("nan")
    for h in history:
        v = h.get(metric)
        if v is not None and v >= float(target):
            return float(h["n_labelled"])
    return float("nan")


def aubc(n_labels: np.ndarray, accuracy: np.ndarray) -> float:
    """Area under the budget curve (Zhan et al. 2021), normalised to [0, 1].

    Trapezoid area of accuracy over the number of labels (scikit-learn's ``auc``) divided by
    the label range; a single point gives its own accuracy.

    Args:
        n_labels: ``[R]`` increasing numbers of labels.
        accuracy: ``[R]`` accuracies in [0, 1].
    """
    x, y = np.asarray(n_labels, dtype=float), np.asarray(accuracy, dtype=float)
    if len(x) == 0:
        return float("nan")
    if len(x) == 1 or x[-1] == x[0]:
        return float(y[-1])
    return float(auc(x, y) / (x[-1] - x[0]))


def seed_for(seed: int, round: int) -> int:
    """The torch/NumPy seed of round ``round`` in a run with ``seed``."""
    return (seed * 1_000_003 + round * 7919) % (2**31 - 1)


# --------------------------------------------------------------------------- run directory / resume
def find_resumable(output_root: Path, fingerprint: str) -> Path | None:
    """Newest run dir under ``output_root`` whose saved state matches ``fingerprint``.

    A finished run qualifies too: resuming it with a larger ``loop.rounds`` or ``loop.budget``
    continues it; with the same limits there is nothing left to do.
    """
    import json

    best: tuple[float, Path] | None = None
    for meta_path in output_root.glob("**/pool_state.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("config_fingerprint") == fingerprint:
            mtime = meta_path.stat().st_mtime
            if best is None or mtime > best[0]:
                best = (mtime, meta_path.parent)
    return None if best is None else best[1]


def resolve_run_dir(cfg: DictConfig, job_dir: Path, fingerprint: str) -> tuple[Path, bool]:
    """Where this job's state lives, and whether it resumes a saved state.

    ``loop.resume=false`` uses ``job_dir``; ``true`` continues the newest run
    with the same config under ``paths.output_root`` (or starts fresh if there is none); a
    path continues the run saved there.

    Raises:
        ConfigError: ``loop.resume`` names a folder without a saved state.
    """
    resume = cfg.loop.resume
    if resume is False or resume is None:
        return job_dir, False
    if resume is True or str(resume).lower() == "true":
        found = find_resumable(Path(cfg.paths.output_root), fingerprint)
        if found is None:
            progress.console.print("[yellow]loop.resume=true: no saved run with this config under "
                                   f"{cfg.paths.output_root}; starting a new run[/yellow]")
            return job_dir, False
        return found, True
    path = Path(str(resume)).expanduser()
    if not PoolState.exists(path):
        raise ConfigError(f"loop.resume={resume!r}: no saved pool state (pool_state.npz) in that folder; "
                          "pass the run directory printed by the interrupted run, or loop.resume=true")
    return path, True


# --------------------------------------------------------------------------- building blocks
def build_net(cfg: DictConfig, data: ALData) -> ALNet:
    """A fresh network for ``data`` from ``cfg.model.net``."""
    # the model's own message (e.g. weights unavailable, input too small) as a one-line error
    net = instantiate_checked(cfg.model.net, f"model={cfg.model.get('name')}", num_classes=data.num_classes,
                              input_shape=tuple(data.input_shape))
    if not isinstance(net, ALNet):
        raise ConfigError(f"model.net._target_={cfg.model.net._target_!r} must build an alframe ALNet "
                          f"(trunk + head), got {type(net).__name__}")
    return net


def build_trainer(cfg: DictConfig, run_dir: Path, has_val: bool, round: int = 0) -> pl.Trainer:
    """A light Lightning Trainer: no logger, progress bar or model summary; the training
    protocol (:mod:`alframe.protocols`) adds its callbacks and step limits."""
    t = cfg.trainer
    callbacks = []
    patience = t.get("early_stopping_patience")
    use_val = has_val and protocols.uses_validation(cfg)
    if use_val and patience is not None:
        callbacks.append(pl.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=int(patience)))
    callbacks += protocols.callbacks(cfg, run_dir, round, use_val)
    extra = OmegaConf.to_container(t.extra, resolve=True) if t.get("extra") is not None else {}
    keep_best = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)  # else no checkpoint files
    kwargs = {"max_epochs": int(t.max_epochs), "min_epochs": int(t.get("min_epochs") or 1),
              **protocols.trainer_kwargs(cfg)}
    return pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, precision=t.get("precision", "32-true"),
        deterministic=t.get("deterministic", False), logger=False, enable_checkpointing=keep_best,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=1.0 if use_val else 0, callbacks=callbacks, default_root_dir=str(run_dir),
        **{**kwargs, **extra},
    )


def device_of(cfg: DictConfig) -> torch.device:
    """The torch device for scoring and evaluation, matching ``trainer.accelerator``."""
    acc = str(cfg.trainer.accelerator)
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if acc == "mps" or (acc == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


def fit(cfg: DictConfig, data: ALData, state: PoolState, round: int, run_dir: Path,
        pseudo: tuple[np.ndarray, np.ndarray] | None = None) -> ALNet:
    """Train a fresh network on the labelled set of ``state`` (labels from the oracle only).

    Args:
        pseudo: optional ``(idx [P] int, labels [P] int)`` pseudo-labelled pool samples
            (CEAL) added to this round's training set only; never written to ``state``.
    """
    seed = seed_for(int(cfg.seed), round)
    pl.seed_everything(seed, verbose=False)
    net = build_net(cfg, data)
    idx, y = state.labelled_idx, state.labels[state.labelled_idx]
    if pseudo is not None and len(pseudo[0]):
        idx, y = np.concatenate([idx, pseudo[0]]), np.concatenate([y, pseudo[1]])
    module = ALClassifier(net, protocols.optimizer_factory(cfg, instantiate(cfg.model.optimizer), net, len(idx)),
                          instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None)
    train_ds = LabelledView(data.train, idx, y, data.train_transform)
    bs = int(cfg.model.batch_size)
    train_loader = protocols.train_loader(cfg, train_ds, bs, seed) or \
        make_loader(train_ds, batch_size=bs, shuffle=True, seed=seed)
    has_val = len(data.val_idx) > 0
    trainer = build_trainer(cfg, run_dir, has_val, round)
    val_loader = make_loader(data.validation_set(), batch_size=int(cfg.loop.eval_batch_size)) \
        if has_val and protocols.uses_validation(cfg) else None
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    protocols.restore_best(trainer, module)
    net = module.net
    del trainer, module
    return net


def initial_indices(cfg: DictConfig, data: ALData, state: PoolState, k: int | None = None) -> np.ndarray:
    """The initial labelled set to request: seeded random, or class-balanced (simulation only).

    Args:
        k: how many to pick from the pool (default ``loop.initial_size``).

    Returns:
        ``[k] int64`` sorted absolute pool indices.
    """
    rng = np.random.default_rng([int(cfg.seed), 0])
    pool = state.pool_idx
    k = int(cfg.loop.initial_size) if k is None else int(k)
    if not cfg.loop.get("initial_balanced", False):
        return np.sort(rng.choice(pool, size=k, replace=False))
    # Class-balanced start (Gal et al. 2017): k // C per class, the rest at random.
    y = data.targets[pool]
    per = k // data.num_classes
    picked = []
    for c in range(data.num_classes):
        members = pool[y == c]
        picked.append(rng.choice(members, size=min(per, len(members)), replace=False))
    chosen = np.concatenate(picked)
    rest = np.setdiff1d(pool, chosen)
    extra = rng.choice(rest, size=k - len(chosen), replace=False)
    return np.sort(np.concatenate([chosen, extra]).astype(np.int64))


def write_queries_csv(path: Path, state: PoolState, class_names: list[str]) -> None:
    """``queries.csv``: one row per label received (round, index, label, class_name); round 0
    is the initial labelled set."""
    idx = state.labelled_idx
    order = np.lexsort((idx, state.labelled_round[idx]))
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["round", "index", "label", "class_name"])
    for i in idx[order]:
        y = int(state.labels[i])
        w.writerow([int(state.labelled_round[i]), int(i), y, class_names[y]])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode("utf-8")))


def plot_budget_curve(history: list[dict], path: Path, title: str) -> None:
    """Save the budget curve (test accuracy against number of labels) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot([h["n_labelled"] for h in history], [h["test_accuracy"] for h in history], marker="o")
    ax.set_xlabel("number of labels")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- the loop
class Experiment:
    """One active-learning experiment job, built from a resolved Hydra config.

    Args:
        cfg: the composed config (``conf/config.yaml``).
        job_dir: this job's output folder (Hydra's run dir).
        sweep_id: id shared by the jobs of one multirun (tag), or None.

    Raises:
        ConfigError: bad configuration values, before any training starts.
        StateMismatchError: resuming a state that belongs to another dataset or config.
    """

    def __init__(self, cfg: DictConfig, job_dir: Path, sweep_id: str | None = None):
        validate_static(cfg)
        self.cfg, self.sweep_id = cfg, sweep_id
        self.data: ALData = load_data(cfg.dataset)
        self.strategy: QueryStrategy = instantiate_checked(cfg.strategy, f"strategy ({cfg.strategy.get('_target_')})")
        if not isinstance(self.strategy, QueryStrategy):
            raise ConfigError(f"strategy._target_={cfg.strategy._target_!r} is not an alframe QueryStrategy")
        self.oracle: Oracle = instantiate_checked(cfg.oracle, f"oracle ({cfg.oracle.get('_target_')})")
        self.fingerprint = config_fingerprint(cfg)
        self.run_dir, resuming = resolve_run_dir(cfg, Path(job_dir), self.fingerprint)
        self.run_dir = self.run_dir.resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = device_of(cfg)
        if resuming:
            self.state = PoolState.load(self.run_dir, expect={"dataset_fingerprint": self.data.fingerprint,
                                                              "config_fingerprint": self.fingerprint})
        else:
            self.state = PoolState.create(self.data.n_train, holdout=self.data.val_idx, meta={
                "dataset_fingerprint": self.data.fingerprint, "config_fingerprint": self.fingerprint,
                "round": -1, "evaluated_round": -1, "finished": False, "history": [], "pending_request": None,
            })
        validate_with_data(cfg, self.state.n_pool + self.state.n_labelled, self.data.num_classes,
                           self.data.targets is not None)
        build_net(cfg, self.data)  # model config errors (input too small, weights missing) before any labelling
        self._check_target()
        threshold = cfg.loop.get("pseudo_label_threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0.0 < float(threshold) <= 1.0):
            raise ConfigError(f"loop.pseudo_label_threshold={threshold!r} is invalid: must be a confidence "
                              "in (0, 1] (e.g. 0.99) or null to turn pseudo-labelling off")
        self.resuming = resuming

    # ------------------------------------------------------------------ helpers
    @property
    def meta(self) -> dict:
        return self.state.meta

    def _record_seed_labels(self) -> int:
        """Record labels a person already gave (``dataset.seed_labels``) as round-0 labels.

        Returns:
            How many initial samples are still to be requested from the oracle:
            ``max(0, loop.initial_size - number of seed labels)``.
        """
        seed_idx = self.data.extras.get("seed_idx")
        if seed_idx is not None and len(seed_idx) and self.state.n_labelled == 0:
            self.state.label(np.asarray(seed_idx), np.asarray(self.data.extras["seed_labels"]), 0,
                             num_classes=self.data.num_classes)
            self.meta["seed_labels"] = int(len(seed_idx))
            self._save()
        return max(0, int(self.cfg.loop.initial_size) - self.state.n_labelled)

    def _check_target(self) -> None:
        """Validate ``loop.target_accuracy`` / ``loop.target_metric`` before any training."""
        loop = self.cfg.loop
        target, metric = loop.get("target_accuracy"), loop.get("target_metric", "test_accuracy")
        if target is None:
            return
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 < float(target) <= 1.0:
            raise ConfigError(f"loop.target_accuracy={target!r} is invalid: must be an accuracy in (0, 1] or null")
        if metric not in TARGET_METRICS:
            raise ConfigError(f"loop.target_metric={metric!r} is invalid: must be one of {list(TARGET_METRICS)}")
        if metric == "val_accuracy" and len(self.data.val_idx) == 0:
            raise ConfigError("loop.target_metric=val_accuracy needs a validation split, but dataset "
                              f"{self.data.name!r} has none: set dataset.val_size > 0 or use test_accuracy")

    def _target(self) -> tuple[float | None, str]:
        loop = self.cfg.loop
        return loop.get("target_accuracy"), str(loop.get("target_metric", "test_accuracy"))

    def _save(self) -> None:
        self.state.save(self.run_dir)
        write_queries_csv(self.run_dir / "queries.csv", self.state, self.data.class_names)

    def _start_tracking(self) -> Tracker:
        cfg = self.cfg
        uri = cfg.mlflow.tracking_uri or default_tracking_uri(cfg.paths.output_root)
        tags = {"strategy": self.strategy.name, "dataset": self.data.name, "model": cfg.model.name,
                "seed": cfg.seed, "oracle": getattr(self.oracle, "name", type(self.oracle).__name__),
                "run_dir": str(self.run_dir)}
        if self.sweep_id:
            tags["sweep_id"] = self.sweep_id
        tracker = Tracker(uri, cfg.mlflow.experiment_name, run_id=self.meta.get("run_id"),
                          run_name=cfg.mlflow.get("run_name"), tags=tags)
        if not self.meta.get("run_id"):
            self.meta.update(run_id=tracker.run_id, tracking_uri=uri)
            resolved = OmegaConf.to_container(cfg, resolve=True)
            tracker.log_params(flatten(resolved))
            cfg_path = self.run_dir / "config.yaml"
            OmegaConf.save(cfg, cfg_path, resolve=True)
            tracker.log_artifact(cfg_path)
            self._save()
        return tracker

    def _ask_oracle(self, round: int, idx: np.ndarray, net: ALNet | None, tracker: Tracker) -> bool:
        """Send ``idx`` to the oracle for round ``round``; returns False when labels are pending."""
        predicted = confidence = None
        if net is not None and len(idx):
            probs = compute_outputs(net, self.data.train, idx, {"probs"}, device=self.device).probs
            confidence, predicted = (t.numpy() for t in probs.max(dim=1))
        # Labels and seconds received for this round so far (a batch may take several sessions).
        prev = self.meta.get("pending_request") or {}
        tally = prev.get("tally") if prev.get("round") == round and prev.get("tally") else \
            {"received": 0, "seconds": []}
        self.meta["pending_request"] = {"round": round, "idx": [int(i) for i in idx], "tally": tally}
        self._save()
        if len(idx) == 0:  # nothing to ask (e.g. seed labels already cover the initial set)
            result = LabelResult(idx=np.empty(0, dtype=np.int64), labels=np.empty(0, dtype=np.int64))
        else:
            with progress.paused(self.oracle.interactive):
                result = self.oracle.label(LabelRequest(round=round, idx=idx, predicted=predicted,
                                                        confidence=confidence))
        requested = set(int(i) for i in idx)
        if not set(int(i) for i in result.idx) <= requested:
            raise RuntimeError(f"oracle {type(self.oracle).__name__} labelled indices that were not requested: "
                               f"{sorted(set(int(i) for i in result.idx) - requested)[:10]}")
        self.state.label(result.idx, result.labels, round, num_classes=self.data.num_classes)
        tally["received"] += int(len(result.idx))
        if result.seconds is not None:
            tally["seconds"] += [float(t) for t in result.seconds]
        if result.pending:
            left = [i for i in idx if self.state.labelled_round[i] < 0]
            self.meta["pending_request"] = {"round": round, "idx": [int(i) for i in left], "tally": tally}
            self._save()
            return False
        self.meta["pending_request"] = None
        self.meta["round"] = round
        self._save()
        # Per-round budget and cost: labels received (skips excluded), a person's seconds per label.
        metrics = {"labels_received": float(tally["received"])}
        if tally["seconds"]:
            metrics["label_seconds"] = float(np.mean(tally["seconds"]))
            metrics["label_seconds_total"] = float(np.sum(tally["seconds"]))
        metrics.update(result.info)
        tracker.log_metrics(metrics, step=self.state.n_labelled)
        return True

    def _stop_reason(self) -> str | None:
        loop, s = self.cfg.loop, self.state
        if loop.rounds is not None and self.meta["round"] >= int(loop.rounds):
            return f"{loop.rounds} query rounds done"
        if loop.budget is not None and s.n_labelled >= int(loop.budget):
            return f"budget of {loop.budget} labels spent"
        if s.n_pool == 0:
            return "the pool is empty"
        target, metric = self._target()
        reached = labels_to_target(self.meta["history"], target, metric)
        if not np.isnan(reached):
            return f"{metric} reached loop.target_accuracy={target} at {int(reached)} labels"
        return None

    def _load_net(self) -> ALNet | None:
        path = self.run_dir / MODEL_FILE
        if not path.is_file():
            return None
        net = build_net(self.cfg, self.data)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net

    # ------------------------------------------------------------------ main
    def run(self) -> RunResult:
        """Run (or continue) the experiment until the rounds/budget are spent, the pool is
        empty, or an oracle leaves labels pending."""
        cfg, state = self.cfg, self.state
        tracker = self._start_tracking()
        self.oracle.setup(self.data, self.run_dir)
        status = "finished"
        table = progress.RoundTable(title=f"alframe: {self.strategy.name} on {self.data.name}")
        if self.resuming:
            where = f"round {self.meta['round']}" if self.meta["round"] >= 0 else "the initial labelled set"
            progress.console.print(f"Resuming {self.run_dir} at {where} "
                                   f"({state.n_labelled} labels, MLflow run {tracker.run_id})")
        for h in self.meta["history"]:
            table.add(h, replayed=True)
        net: ALNet | None = None
        try:
            # Round 0: the initial labelled set (or what is still pending of a batch).
            pending = self.meta.get("pending_request")
            if self.meta["round"] < 0 and pending is None:
                k0 = self._record_seed_labels()
                pending = {"round": 0, "idx": initial_indices(cfg, self.data, state, k0).tolist()}
            if pending is not None:
                net = self._load_net() if pending["round"] > 0 else None
                if not self._ask_oracle(int(pending["round"]), np.asarray(pending["idx"], dtype=np.int64),
                                        net, tracker):
                    status = "pending"
            while status == "finished":
                r = self.meta["round"]
                if self.meta["evaluated_round"] < r:
                    net = self._train_and_log(r, tracker, table, prev=net)
                reason = self._stop_reason()
                if reason is not None:
                    progress.console.print(f"Stopping: {reason}.", style="dim")
                    break
                if net is None:
                    net = self._load_net() or self._train_and_log(r, tracker, table, log_metrics=False)
                if not self._query(r + 1, net, tracker):
                    status = "pending"
            if status == "finished":
                self.meta["finished"] = True
                self._save()
            return self._finish(tracker, status)
        except BaseException as e:
            self._save()
            tracker.finish("FAILED" if isinstance(e, Exception) else "KILLED")
            raise
        finally:
            self.oracle.close()

    def _train_and_log(self, r: int, tracker: Tracker, table: progress.RoundTable,
                       log_metrics: bool = True, prev: ALNet | None = None) -> ALNet:
        """Train round ``r``'s model, evaluate and log it; ``prev`` is round ``r - 1``'s model
        when still in memory (pseudo-labelling reads it; otherwise it is loaded from disk)."""
        state = self.state
        pseudo, pseudo_info = self._pseudo_labels(r, prev) if log_metrics else (None, {})
        with progress.status(f"round {r}: training on {state.n_labelled} labels"):
            t0 = time.perf_counter()
            net = fit(self.cfg, self.data, state, r, self.run_dir, pseudo=pseudo)
            train_s = time.perf_counter() - t0
            test = evaluate(net, self.data.test, int(self.cfg.loop.eval_batch_size), self.device)
            val = evaluate(net, self.data.validation_set(), int(self.cfg.loop.eval_batch_size), self.device) \
                if len(self.data.val_idx) else None
        atomic_write(self.run_dir / MODEL_FILE, lambda f: torch.save(net.state_dict(), f))
        if not log_metrics:
            return net
        row = {"round": r, "n_labelled": state.n_labelled, "test_accuracy": test["accuracy"],
               "test_loss": test["loss"], "train_seconds": train_s}
        if val is not None:
            row["val_accuracy"] = val["accuracy"]
        row.update(pseudo_info)
        tracker.log_metrics(row, step=state.n_labelled)
        self.meta["history"].append(row)
        self.meta["evaluated_round"] = r
        self._save()
        table.add(row)
        return net

    def _pseudo_labels(self, r: int, prev: ALNet | None = None
                       ) -> tuple[tuple[np.ndarray, np.ndarray] | None, dict[str, float]]:
        """CEAL pseudo-labels for round ``r`` (Wang et al. 2017, "Cost-Effective Active Learning
        for Deep Image Classification").

        Pool samples whose class probability under the previous round's model is at least
        ``loop.pseudo_label_threshold`` join round ``r``'s training set with the predicted class.
        They are recomputed every round, never written to the pool state and never counted
        in the budget.

        Returns:
            ``((idx [P], labels [P]) or None, metrics)``; metrics hold ``pseudo_labels`` (P)
            and, when the dataset stores true labels, ``pseudo_label_accuracy``.
        """
        threshold = self.cfg.loop.get("pseudo_label_threshold")
        if threshold is None or r == 0:
            return None, {}
        if prev is None:
            prev = self._load_net()  # still the model of round r - 1 at this point
        pool = self.state.pool_idx
        if prev is None or len(pool) == 0:
            return None, {"pseudo_labels": 0.0}
        probs = compute_outputs(prev, self.data.train, pool, {"probs"},
                                batch_size=int(self.cfg.loop.eval_batch_size), device=self.device).probs
        conf, pred = (t.numpy() for t in probs.max(dim=1))
        keep = conf >= float(threshold)
        idx, y = pool[keep], pred[keep].astype(np.int64)
        info = {"pseudo_labels": float(len(idx))}
        if self.data.targets is not None and len(idx):
            info["pseudo_label_accuracy"] = float((np.asarray(self.data.targets)[idx] == y).mean())
        return (idx, y), info

    def _query(self, r: int, net: ALNet, tracker: Tracker) -> bool:
        cfg, state = self.cfg, self.state
        rng = np.random.default_rng([int(cfg.seed), r])
        k = int(cfg.loop.query_size)
        if cfg.loop.budget is not None:
            k = min(k, int(cfg.loop.budget) - state.n_labelled)
        pool = state.pool_idx
        k = min(k, len(pool))
        candidates = pool
        if cfg.loop.pool_subset is not None and int(cfg.loop.pool_subset) < len(pool):
            candidates = np.sort(rng.choice(pool, size=int(cfg.loop.pool_subset), replace=False))
        # consistent MC dropout: the round's seed draws one dropout mask per MC sample for the whole pool
        mask_seed = seed_for(int(cfg.seed), r) if getattr(self.strategy, "consistent_dropout", False) else None
        with progress.status(f"round {r}: scoring {len(candidates)} pool samples"):
            t0 = time.perf_counter()
            outputs = compute_outputs(net, self.data.train, candidates, self.strategy.requires,
                                      mc_samples=int(getattr(self.strategy, "mc_samples", 0) or 0),
                                      batch_size=int(cfg.loop.eval_batch_size), device=self.device,
                                      labelled_idx=state.labelled_idx,
                                      mask_seed=mask_seed)
            score_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            chosen = np.asarray(self.strategy.query(outputs, state, k, rng), dtype=np.int64)
            query_s = time.perf_counter() - t0
        check_query(chosen, candidates, state, k, self.strategy.name)
        tracker.log_metrics({"score_seconds": score_s, "query_seconds": query_s}, step=state.n_labelled, defer=True)
        self.meta.setdefault("timings", {})[str(r)] = {"score_seconds": score_s, "query_seconds": query_s}
        return self._ask_oracle(r, chosen, net, tracker)

    def _finish(self, tracker: Tracker, status: str) -> RunResult:
        tracker.log_metrics({})  # send deferred metrics (timings) also when stopping for labels
        history = self.meta["history"]
        result = RunResult(run_dir=self.run_dir, run_id=tracker.run_id, tracking_uri=tracker.tracking_uri,
                           experiment_name=self.cfg.mlflow.experiment_name, history=history, status=status)
        if history:
            result.final_accuracy = float(history[-1]["test_accuracy"])
            result.aubc = aubc([h["n_labelled"] for h in history], [h["test_accuracy"] for h in history])
            plot = self.run_dir / "budget_curve.png"
            plot_budget_curve(history, plot, f"{self.strategy.name} on {self.data.name} (seed {self.cfg.seed})")
            tracker.log_artifact(plot)
        tracker.log_artifact(self.run_dir / "queries.csv")
        if status == "finished":
            summary = {"final_accuracy": result.final_accuracy, "aubc": result.aubc,
                       "final_n_labelled": float(self.state.n_labelled)}
            target, metric = self._target()
            if target is not None:
                result.labels_to_target = labels_to_target(history, target, metric)
                summary["target_reached"] = float(not np.isnan(result.labels_to_target))
                if summary["target_reached"]:
                    summary["labels_to_target"] = result.labels_to_target
            tracker.log_metrics(summary, step=self.state.n_labelled)
            labelled = self.run_dir / "labelled_set.npz"
            np.savez(labelled, idx=self.state.labelled_idx, labels=self.state.labels[self.state.labelled_idx],
                     round=self.state.labelled_round[self.state.labelled_idx])
            tracker.log_artifact(labelled)
            tracker.finish("FINISHED")
        else:  # waiting for labels: the run stays RUNNING until it is resumed
            tracker.set_tags({"alframe.status": "waiting_for_labels"})
        progress.summary(result, pending=status == "pending")
        gc.collect()
        return result


def check_query(chosen: np.ndarray, candidates: np.ndarray, state: PoolState, k: int, name: str) -> None:
    """Enforce the strategy contract: ``min(k, M)`` unique candidate indices, none labelled.

    Raises:
        RuntimeError: naming the strategy and what it broke.
    """
    want = min(k, len(candidates))
    if len(chosen) != want:
        raise RuntimeError(f"strategy {name!r} returned {len(chosen)} indices, expected {want}")
    if len(np.unique(chosen)) != len(chosen):
        raise RuntimeError(f"strategy {name!r} returned duplicate indices")
    outside = np.setdiff1d(chosen, candidates)
    if len(outside):
        raise RuntimeError(f"strategy {name!r} returned indices outside the scored pool: {outside[:10].tolist()}")
    if state.labelled_mask[chosen].any():
        raise RuntimeError(f"strategy {name!r} returned already-labelled indices")


def run_experiment(cfg: DictConfig, job_dir: str | Path, sweep_id: str | None = None) -> RunResult:
    """Build and run one experiment job (see :class:`Experiment`); ``smoke=true`` shrinks it
    to one tiny round first (:func:`alframe.smoke.apply_smoke`)."""
    if cfg.get("smoke"):
        from alframe.smoke import apply_smoke

        cfg = apply_smoke(cfg)
    return Experiment(cfg, Path(job_dir), sweep_id=sweep_id).run()


__all__ = ["Experiment", "RunResult", "run_experiment", "aubc", "labels_to_target", "ConfigError", "StateMismatchError"]
