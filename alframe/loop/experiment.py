"""The active-learning round loop.

One round::

    fit a fresh model on the labelled set (Lightning Trainer)
    evaluate on the fixed test set -> log metrics at step = number of labels
    save state; stop if the rounds or the budget are spent or the pool is empty
    score the pool (or a random subset), once, with what the strategy requires
    strategy picks k pool indices -> oracle labels them -> state.label(...) -> save state

Round 0 trains on the initial labelled set. ``loop.rounds`` counts the query rounds after it.
Randomness of round ``r`` is seeded from ``(seed, r)`` (:mod:`alframe.training.trainer`), so a
resumed run repeats exactly what an uninterrupted one would have done. The rooms around the
loop: :mod:`alframe.training.trainer` (Trainer, fit, device), :mod:`alframe.rundir.resume` (saved runs),
:mod:`alframe.oracles.session` (pending batches), :mod:`alframe.loop.pseudo` (CEAL hook),
:mod:`alframe.tracking.run` (MLflow run and artifacts), :mod:`alframe.metrics` (AUBC).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from alframe import faults, progress
from alframe.config.checks import validate_loop_options, validate_static, validate_with_data
from alframe.config.fingerprint import config_fingerprints
from alframe.config.instantiate import instantiate_checked
from alframe.data.base import ALData, load_data
from alframe.errors import ConfigError, StateMismatchError
from alframe.loop.labelling import LabellingJob
from alframe.loop.pseudo import PseudoLabeller
from alframe.metrics import aubc, labels_to_target  # noqa: F401 (re-exported)
from alframe.models.base import ALNet
from alframe.oracles.base import Oracle
from alframe.oracles.session import OracleSession
from alframe.rundir.claim import claim_run_folder, holding_claim, undo_claim_on_error
from alframe.rundir.resume import check_same_data, save_files_manifest
from alframe.rundir.state import PendingRequest, PoolState, RunProgress
from alframe.scoring.evaluate import evaluate_many
from alframe.scoring.pool import compute_outputs
from alframe.strategies.base import QueryStrategy
from alframe.tracking.run import RunResult, Tracker, close_run, start_run, write_queries_csv
from alframe.tracking.store import tracking_uri_of
from alframe.training.seeds import SCORE, round_rng, round_seed
from alframe.training.trainer import (
    check_training_setup,
    device_of,
    fit,
    load_net,
    quiet_lightning,
    save_net,
    scoring_spread,
)


def initial_indices(cfg: DictConfig, data: ALData, state: PoolState, k: int | None = None) -> np.ndarray:
    """The initial labelled set to request: seeded random, or class-balanced (simulation only).

    Args:
        k: how many to pick from the pool (default ``loop.initial_size``).

    Returns:
        ``[k] int64`` sorted absolute pool indices.
    """
    rng = round_rng(cfg.seed, 0)
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


class Experiment:
    """One active-learning experiment job, built from a resolved Hydra config.

    Args:
        cfg: the composed config (``conf/config.yaml``).
        job_dir: this job's output folder (Hydra's run dir).
        sweep_id: id shared by the jobs of one multirun (tag), or None.

    Raises:
        ConfigError: bad configuration values, before any training starts.
        StateMismatchError: resuming a state that belongs to another dataset or config.
        RunFolderBusy: another process holds the run folder (:mod:`alframe.rundir.lock`).
    """

    @undo_claim_on_error  # a refused job leaves its folder as it found it
    def __init__(self, cfg: DictConfig, job_dir: Path, sweep_id: str | None = None):
        validate_static(cfg)
        self.claim = claim_run_folder(cfg, job_dir)  # the run folder's lock, before anything is read or written
        quiet_lightning()
        self.cfg, self.sweep_id = cfg, sweep_id
        self.data: ALData = load_data(cfg.dataset)
        self.strategy: QueryStrategy = instantiate_checked(cfg.strategy, f"strategy ({cfg.strategy.get('_target_')})")
        if not isinstance(self.strategy, QueryStrategy):
            raise ConfigError(f"strategy._target_={cfg.strategy._target_!r} is not an alframe QueryStrategy")
        if cfg.loop.consistent_dropout is not None and "mc_probs" in self.strategy.requires:
            self.strategy.consistent_dropout = bool(cfg.loop.consistent_dropout)  # one mask mode for a comparison
        self.oracle: Oracle = instantiate_checked(cfg.oracle, f"oracle ({cfg.oracle.get('_target_')})")
        fingerprint, accepted = config_fingerprints(cfg)
        run_dir, self.resuming = self.claim.run_dir, self.claim.resuming
        self.run_dir = run_dir.resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resuming:
            self.state = PoolState.load(self.run_dir)
            check_same_data(self.run_dir, self.state.progress.dataset_fingerprint, self.data)
            if self.state.progress.config_fingerprint not in accepted:
                raise StateMismatchError(
                    f"saved state in {self.run_dir} has config_fingerprint="
                    f"{self.state.progress.config_fingerprint!r}, but this run has config_fingerprint="
                    f"{fingerprint!r}: it belongs to another dataset or configuration")
            self.state.progress.config_fingerprint = fingerprint
        else:
            self.state = PoolState.create(self.data.n_train, holdout=self.data.val_idx, progress=RunProgress(
                dataset_fingerprint=self.data.fingerprint, config_fingerprint=fingerprint))
        validate_with_data(cfg, self.state.n_pool + self.state.n_labelled, self.data.num_classes,
                           self.data.targets is not None)
        validate_loop_options(cfg, len(self.data.val_idx) > 0, self.data.name)
        check_training_setup(cfg, self.data, self.strategy, self.run_dir)
        self.device = device_of(cfg)
        self.spread = scoring_spread(cfg, self.run_dir)  # trainer.devices=N > 1: sharded scoring
        self.eval_batch_size = int(cfg.loop.eval_batch_size)
        self.session = OracleSession(self.oracle, self.data, self.state, self._save, self.device)
        threshold = cfg.loop.get("pseudo_label_threshold")
        self.pseudo = PseudoLabeller(threshold, self.eval_batch_size, self.device) if threshold is not None else None
        target = cfg.loop.get("target_accuracy")
        self.target = (None if target is None else float(target), str(cfg.loop.get("target_metric", "test_accuracy")))
        self.job = LabellingJob(cfg, self.data, self.state, self.run_dir, self.device)  # stop set, model export
        self._csv_labels = -1  # labelled-set size queries.csv was last written for (it only grows)

    @property
    def progress(self) -> RunProgress:
        """Where the run stands (saved with the pool state)."""
        return self.state.progress

    # ------------------------------------------------------------------ the loop
    @holding_claim  # the run folder stays locked while the run goes on
    def run(self) -> RunResult:
        """Run (or continue) the experiment until the rounds/budget are spent, the pool is
        empty, the target is reached, or an oracle leaves labels pending."""
        p = self.progress
        tracker = self._start_tracking()
        self.oracle.setup(self.data, self.run_dir)
        table = progress.RoundTable(title=f"alframe: {self.strategy.name} on {self.data.name}")
        if self.resuming:
            where = f"round {p.round}" if p.round >= 0 else "the initial labelled set"
            progress.console.print(f"Resuming {self.run_dir} at {where} ({self.state.n_labelled} labels, "
                                   f"MLflow run {tracker.run_id})", soft_wrap=True)
        for h in p.history:
            table.add(h, replayed=True)
        net: ALNet | None = None
        complete = True
        try:
            pending = p.pending
            if p.round < 0 and pending is None:  # round 0: the initial labelled set
                k0 = self._record_seed_labels()
                pending = PendingRequest(round=0, idx=initial_indices(self.cfg, self.data, self.state, k0).tolist())
            if pending is not None:  # a batch sent before the interruption
                net = self._load_net() if pending.round > 0 else None
                complete = self._label(pending.round, np.asarray(pending.idx, dtype=np.int64), net, tracker)
            while complete:
                r = p.round
                if p.evaluated_round < r:
                    net = self._train_and_log(r, tracker, table, prev=net)
                reason = self._stop_reason()
                if reason is not None:
                    progress.console.print(f"Stopping: {reason}.", style="dim")
                    tracker.set_tags({"stop_reason": reason})
                    break
                if net is None:  # resumed after round r was logged: its saved model (or a retrain)
                    net = self._load_net() or self._train(r)[0]
                chosen = self._query(r + 1, net, tracker)
                complete = self._label(r + 1, chosen, net, tracker)
            if complete:
                p.finished = True
                self._queue_unlogged(tracker)  # sent by the run's finish request
                p.unlogged.clear()
                self._save()
            return self._finish(tracker, "finished" if complete else "pending")
        except BaseException as e:
            self._queue_unlogged(tracker)  # sent by tracker.finish below
            self.progress.unlogged.clear()
            self._save()
            tracker.finish("FAILED" if isinstance(e, Exception) else "KILLED")
            raise
        finally:
            self.oracle.close()

    def _train(self, r: int, prev: ALNet | None = None) -> tuple[ALNet, dict]:
        """Train and evaluate round ``r``'s model; save it. Returns ``(net, metrics row)``."""
        state, n = self.state, self.state.n_labelled
        pseudo, row = None, {}
        if self.pseudo is not None and r > 0:  # CEAL hook: the previous round's model
            pseudo, row = self.pseudo(self.data, state, prev if prev is not None else self._load_net())
        with progress.status(f"round {r}: training on {n} labels"):
            t0 = time.perf_counter()
            net = fit(self.cfg, self.data, state, r, self.run_dir, pseudo=pseudo)
            train_s = time.perf_counter() - t0
            sets = [self.data.test] + ([self.data.validation_set()] if len(self.data.val_idx) else [])
            test, *val = evaluate_many(net, sets, self.eval_batch_size, self.device, self.spread)
            val = val[0] if val else None
        save_net(net, self.run_dir)
        row = {"round": r, "n_labelled": n, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
               "train_seconds": train_s, **({"val_accuracy": val["accuracy"]} if val is not None else {}), **row}
        return net, row

    def _train_and_log(self, r: int, tracker: Tracker, table: progress.RoundTable,
                       prev: ALNet | None = None) -> ALNet:
        """Train round ``r``'s model, evaluate, log at step = number of labels, and save."""
        net, row = self._train(r, prev)
        self._queue_unlogged(tracker)  # the labels' metrics go in the same request
        tracker.log_metrics(row, step=self.state.n_labelled)
        self.progress.unlogged.clear()  # sent; the save below records it
        self.job.after_round(r, net, tracker)  # stop_kappa, machine-label evidence
        faults.point("logged")
        self.progress.history.append(row)
        self.progress.evaluated_round = r
        self._save()
        table.add(row)
        return net

    def _query(self, r: int, net: ALNet, tracker: Tracker) -> np.ndarray:
        """Score the pool (or a seeded subset of it) and let the strategy pick round ``r``'s batch.

        Returns:
            ``[k] int64`` pool indices, checked by :func:`check_query`.
        """
        loop, state = self.cfg.loop, self.state
        rng = round_rng(self.cfg.seed, r)
        pool = state.pool_idx
        k = int(loop.query_size) if loop.budget is None else min(int(loop.query_size), int(loop.budget) - state.n_labelled)
        k = min(k, len(pool))
        candidates = pool
        if loop.pool_subset is not None and int(loop.pool_subset) < len(pool):
            candidates = np.sort(rng.choice(pool, size=int(loop.pool_subset), replace=False))
        with progress.status(f"round {r}: scoring {len(candidates)} pool samples"):
            score_seed = round_seed(self.cfg.seed, r, SCORE)
            torch.manual_seed(score_seed)  # MC-dropout masks, drawn per sample
            faults.point("score")
            t0 = time.perf_counter()
            outputs = compute_outputs(net, self.data.train, candidates, self.strategy.requires,
                                      mc_samples=int(getattr(self.strategy, "mc_samples", 0) or 0),
                                      batch_size=self.eval_batch_size, device=self.device, spread=self.spread,
                                      labelled_idx=state.labelled_idx,
                                      # consistent MC dropout: one mask per MC sample for the whole pool
                                      mask_seed=score_seed if self.strategy.consistent_dropout
                                      else None)
            score_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            chosen = np.asarray(self.strategy.query(outputs, k, rng), dtype=np.int64)
            query_s = time.perf_counter() - t0
        check_query(chosen, candidates, state, k, self.strategy.name)
        faults.point("query_done")
        tracker.log_metrics({"score_seconds": score_s, "query_seconds": query_s}, step=state.n_labelled, defer=True)
        return chosen

    def _label(self, r: int, idx: np.ndarray, net: ALNet | None, tracker: Tracker) -> bool:
        """Ask the oracle for round ``r``'s labels; False while some are pending. The batch's
        metrics (labels received, a person's seconds) wait in ``progress.unlogged``, saved with
        the labels, and go to MLflow with the next round's metrics (one request per round)."""
        complete, _ = self.session.ask(r, idx, net)
        return complete

    def _queue_unlogged(self, tracker: Tracker) -> None:
        """Hand the saved, not yet logged metrics of labelled batches to ``tracker`` (deferred:
        its next request sends them). The caller clears ``progress.unlogged`` and saves after
        that, so a crash in between sends them again on resume (the same values at the same step)."""
        for entry in self.progress.unlogged:
            tracker.log_metrics(entry["metrics"], step=int(entry["step"]), defer=True)

    def _stop_reason(self) -> str | None:
        loop, s, p = self.cfg.loop, self.state, self.progress
        if loop.rounds is not None and p.round >= int(loop.rounds):
            return f"{loop.rounds} query rounds done"
        if loop.budget is not None and s.n_labelled >= int(loop.budget):
            return f"budget of {loop.budget} labels spent"
        if s.n_pool == 0:
            return "the pool is empty"
        target, metric = self.target
        reached = labels_to_target(p.history, target, metric)
        if not np.isnan(reached):
            return f"{metric} reached loop.target_accuracy={target} at {int(reached)} labels"
        return self.job.stop_reason()

    # ------------------------------------------------------------------ run folder and MLflow
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
            self.progress.seed_labels = int(len(seed_idx))
            self._save()
        return max(0, int(self.cfg.loop.initial_size) - self.state.n_labelled)

    def _load_net(self) -> ALNet | None:
        return load_net(self.cfg, self.data, self.run_dir)

    def _save(self) -> None:
        self.state.save(self.run_dir)
        faults.point("state_saved")
        path = self.run_dir / "queries.csv"
        if self.state.n_labelled != self._csv_labels or not path.is_file():  # labels are only ever added
            write_queries_csv(path, self.state, self.data.class_names, self.data.extras.get("files"))
            self._csv_labels = self.state.n_labelled

    def _start_tracking(self) -> Tracker:
        cfg, p = self.cfg, self.progress
        uri = p.tracking_uri or tracking_uri_of(cfg)  # a resumed run stays in its store
        tags = {"strategy": self.strategy.name, "dataset": self.data.name, "model": cfg.model.name,
                "seed": cfg.seed, "oracle": getattr(self.oracle, "name", type(self.oracle).__name__),
                "run_dir": str(self.run_dir), **({"sweep_id": self.sweep_id} if self.sweep_id else {}),
                **({"alframe.config.smoke": "true"} if cfg.get("smoke") else {})}
        tracker = start_run(uri, cfg.mlflow.experiment_name, p.run_id, cfg.mlflow.get("run_name"), tags,
                            OmegaConf.to_container(cfg, resolve=True), self.run_dir)
        if p.run_id is None:  # a new run
            p.run_id, p.tracking_uri = tracker.run_id, uri
            save_files_manifest(self.run_dir, self.data)
            self._save()
        return tracker

    def _finish(self, tracker: Tracker, status: str) -> RunResult:
        if status == "finished":
            self.job.finish(tracker, self._load_net())  # the final model as an MLflow model
        title = f"{self.strategy.name} on {self.data.name} (seed {self.cfg.seed})"
        result = close_run(tracker, self.run_dir, self.cfg.mlflow.experiment_name, self.progress.history,
                           self.state, status, title, self.strategy.name, self.target)
        link = tracker.budget_curves_url(self.sweep_id, ui_url=self.cfg.mlflow.get("ui_url"))
        progress.summary(result, pending=status == "pending", link=link)
        return result


def build_experiment(cfg: DictConfig, job_dir: str | Path, sweep_id: str | None = None) -> Experiment:
    """The :class:`Experiment` of one job, all checks done; ``smoke=true`` shrinks it to one
    tiny round first (:func:`alframe.config.smoke.apply_smoke`)."""
    if cfg.get("smoke"):
        from alframe.config.smoke import apply_smoke

        cfg = apply_smoke(cfg)
    return Experiment(cfg, Path(job_dir), sweep_id=sweep_id)


def run_experiment(cfg: DictConfig, job_dir: str | Path, sweep_id: str | None = None) -> RunResult:
    """Build and run one experiment job (see :func:`build_experiment`)."""
    return build_experiment(cfg, job_dir, sweep_id).run()


__all__ = ["Experiment", "RunResult", "build_experiment", "run_experiment", "initial_indices", "check_query", "aubc",
           "labels_to_target", "ConfigError", "StateMismatchError"]


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
