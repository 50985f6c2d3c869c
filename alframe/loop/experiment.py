"""The active-learning round loop. One round::

    fit a fresh model on the labelled set (Lightning Trainer)
    evaluate on the fixed test set -> log metrics at step = number of labels
    save state; stop if the rounds or the budget are spent, the pool is empty or a hook says so
    score the pool (or a random subset), once, with what the strategy requires
    strategy picks k pool indices -> oracle labels them -> state.label(...) -> save state

Round 0 trains on the initial labelled set (:func:`~alframe.loop.selection.initial_request`);
``loop.rounds`` counts the query rounds after it. Round ``r``'s randomness comes from
``(seed, r)`` (:mod:`alframe.training.seeds`): a resumed run repeats an uninterrupted one. Per-round extras are round hooks (:mod:`alframe.loop.hooks`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from alframe import faults, progress
from alframe.config.settings import Settings, settings_of
from alframe.loop.hooks import Run
from alframe.loop.selection import initial_request, query, record_seed_labels
from alframe.loop.setup import build_parts, start_tracking
from alframe.models.base import ALNet
from alframe.oracles.session import OracleSession
from alframe.rundir.claim import claim_run_folder, holding_claim, undo_claim_on_error
from alframe.rundir.resume import save_files_manifest
from alframe.rundir.state import PendingRequest
from alframe.scoring.evaluate import evaluate_many
from alframe.tracking.run import RunResult, Tracker, close_run, write_queries_csv
from alframe.training.trainer import (
    check_training_setup,
    device_of,
    fit,
    load_net,
    quiet_lightning,
    save_net,
    scoring_spread,
)


class Experiment:
    """One active-learning experiment job.

    Args:
        cfg: the composed config (``conf/config.yaml``), or its checked :class:`Settings`.
        job_dir: this job's output folder (Hydra's run dir).
        sweep_id: id shared by the jobs of one multirun (tag), or None.

    Raises:
        ConfigError: bad configuration values, before any training starts.
        StateMismatchError: resuming a state that belongs to another dataset or config.
        RunFolderBusy: another process holds the run folder (:mod:`alframe.rundir.lock`).
    """

    @undo_claim_on_error  # a refused job leaves its folder as it found it
    def __init__(self, cfg: DictConfig | Settings, job_dir: Path, sweep_id: str | None = None):
        s = cfg if isinstance(cfg, Settings) else settings_of(cfg)
        self.claim = claim_run_folder(s.raw, job_dir)  # the folder's lock, before anything is read or written
        quiet_lightning()
        self.settings, self.cfg, self.sweep_id = s, s.raw, sweep_id
        p = build_parts(s, self.claim.run_dir, self.claim.resuming)  # threads set there
        self.data, self.strategy, self.oracle, self.hooks, self.run_dir, self.resuming, self.state = (
            p.data, p.strategy, p.oracle, p.hooks, p.run_dir, p.resuming, p.state)
        check_training_setup(s, self.data, self.strategy, self.run_dir)
        self.device, self.spread = device_of(s), scoring_spread(s, self.run_dir)  # spread: trainer.devices > 1
        self.session = OracleSession(self.oracle, self.data, self.state, self._save, self.device)
        self.run_ctx = Run(s, self.data, self.state, self.run_dir, self.device)
        for hook in self.hooks:
            hook.setup(self.run_ctx)
        self._csv_labels: tuple[int, int] | None = None  # (labels, corrections) queries.csv was written for

    progress = property(lambda self: self.state.progress, doc="Where the run stands (saved with the pool state).")

    # ------------------------------------------------------------------ the loop
    @holding_claim  # the run folder stays locked while the run goes on
    def run(self) -> RunResult:
        """Run (or continue) the experiment until the rounds/budget are spent, the pool is
        empty, a hook says stop, or an oracle leaves labels pending."""
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
                k0 = record_seed_labels(self.data, self.state, self.settings.loop.initial_size)
                if self.progress.seed_labels:
                    self._save()
                pending = PendingRequest(round=0, idx=initial_request(  # seeded random, or a cold start
                    self.settings, self.strategy, self.data, self.state, k0, self.device, self.spread, tracker).tolist())
            if pending is not None:  # a batch sent before the interruption
                net = self._load_net() if pending.round > 0 else None
                complete = self.session.ask(pending.round, np.asarray(pending.idx, dtype=np.int64), net)[0]
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
                chosen, scores = self._query(r + 1, net, tracker)
                complete = self.session.ask(r + 1, chosen, net, scores)[0]  # batch metrics wait in progress.unlogged
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
        state, n, row, pseudo = self.state, self.state.n_labelled, {}, []
        loaded: dict[str, ALNet | None] = {} if prev is None else {"net": prev}

        def previous_model() -> ALNet | None:  # loaded once, only when a hook asks
            if "net" not in loaded:
                loaded["net"] = self._load_net()
            return loaded["net"]

        for hook in self.hooks:
            extra, metrics = hook.training_set(self.run_ctx, r, previous_model)
            row.update(metrics)
            if extra is not None:
                pseudo.append(extra)
        pseudo = None if not pseudo else tuple(np.concatenate(part) for part in zip(*pseudo, strict=True))
        with progress.status(f"round {r}: training on {n} labels"):
            t0 = time.perf_counter()
            net = fit(self.settings, self.data, state, r, self.run_dir, pseudo=pseudo)
            train_s = time.perf_counter() - t0
            sets = [self.data.test] + ([self.data.validation_set()] if len(self.data.val_idx) else [])
            test, *val = evaluate_many(net, sets, self.settings.loop.eval_batch_size, self.device, self.spread)
        save_net(net, self.run_dir)
        return net, {"round": r, "n_labelled": n, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                     "train_seconds": train_s, **({"val_accuracy": val[0]["accuracy"]} if val else {}), **row}

    def _train_and_log(self, r: int, tracker: Tracker, table: progress.RoundTable,
                       prev: ALNet | None = None) -> ALNet:
        """Train and evaluate round ``r``, run the hooks' round end, log it all in one request, save."""
        net, row = self._train(r, prev)
        extra: dict[str, float] = {}
        for hook in self.hooks:  # stop_kappa, machine-label evidence, the round's model
            extra.update(hook.on_round_end(self.run_ctx, r, net, tracker))
        self._queue_unlogged(tracker)  # the labels' metrics go in the same request
        tracker.log_metrics({**row, **extra}, step=self.state.n_labelled)
        self.progress.unlogged.clear()  # sent; the save below records it
        faults.point("logged")
        self.progress.history.append(row)
        self.progress.evaluated_round = r
        self._save()
        table.add(row)
        return net

    def _query(self, r: int, net: ALNet, tracker: Tracker) -> tuple[np.ndarray, np.ndarray | None]:
        """Round ``r``'s ``[k] int64`` pool indices and scores (or None): :func:`~alframe.loop.selection.query`."""
        with progress.status(f"round {r}: scoring the pool"):
            chosen, seconds, scores = query(self.settings, self.strategy, net, self.data, self.state, r,
                                            self.device, self.spread)
        faults.point("query_done")
        tracker.log_metrics(seconds, step=self.state.n_labelled, defer=True)
        return chosen, scores

    def _queue_unlogged(self, tracker: Tracker) -> None:
        """Hand the saved, not yet logged metrics of labelled batches to ``tracker`` (deferred:
        its next request sends them). The caller clears ``progress.unlogged`` and saves after
        that, so a crash in between sends them again on resume (the same values at the same step)."""
        for entry in self.progress.unlogged:
            tracker.log_metrics(entry["metrics"], step=int(entry["step"]), defer=True)

    def _stop_reason(self) -> str | None:
        """The loop's own stops (rounds, budget, empty pool), then each hook's, or None."""
        loop, s, p = self.settings.loop, self.state, self.progress
        if loop.rounds is not None and p.round >= loop.rounds:
            return f"{loop.rounds} query rounds done"
        if loop.budget is not None and s.n_labelled >= loop.budget:
            return f"budget of {loop.budget} labels spent"
        if s.n_pool == 0:
            return "the pool is empty"
        return next((r for r in (h.stop_reason(self.run_ctx) for h in self.hooks) if r is not None), None)

    # ------------------------------------------------------------------ run folder and MLflow
    def _load_net(self) -> ALNet | None:
        return load_net(self.settings, self.data, self.run_dir)

    def _save(self) -> None:
        self.state.save(self.run_dir)
        faults.point("state_saved")
        path = self.run_dir / "queries.csv"
        revision = (self.state.n_labelled, len(self.progress.corrections))  # labels added or corrected
        if revision != self._csv_labels or not path.is_file():
            write_queries_csv(path, self.state, self.data.class_names, self.data.extras.get("files"))
            self._csv_labels = revision

    def _start_tracking(self) -> Tracker:
        tracker, new = start_tracking(self.settings, self.progress, self.strategy.name, self.data.name,
                                      getattr(self.oracle, "name", type(self.oracle).__name__), self.run_dir,
                                      self.sweep_id)
        if new:
            save_files_manifest(self.run_dir, self.data)
            self._save()
        return tracker

    def _finish(self, tracker: Tracker, status: str) -> RunResult:
        if status == "finished":
            net = self._load_net()
            for hook in self.hooks:  # the final model as an MLflow model
                hook.on_finish(self.run_ctx, net, tracker)
        loop, title = self.settings.loop, f"{self.strategy.name} on {self.data.name} (seed {self.settings.seed})"
        result = close_run(tracker, self.run_dir, self.settings.mlflow.experiment_name, self.progress.history,
                           self.state, status, title, self.strategy.name, (loop.target_accuracy, loop.target_metric))
        link = tracker.budget_curves_url(self.sweep_id, ui_url=self.settings.mlflow.ui_url)
        progress.summary(result, pending=status == "pending", link=link)
        return result


def build_experiment(cfg: DictConfig | Settings, job_dir: str | Path, sweep_id: str | None = None) -> Experiment:
    """The :class:`Experiment` of one job, all checks done; ``smoke=true`` shrinks it to one
    tiny round first (:func:`alframe.config.smoke.apply_smoke`)."""
    if (cfg.smoke if isinstance(cfg, Settings) else cfg.get("smoke")):
        from alframe.config.smoke import apply_smoke

        cfg = settings_of(apply_smoke(cfg.raw if isinstance(cfg, Settings) else cfg))
    return Experiment(cfg, Path(job_dir), sweep_id=sweep_id)


def run_experiment(cfg: DictConfig | Settings, job_dir: str | Path, sweep_id: str | None = None) -> RunResult:
    """Build and run one experiment job (see :func:`build_experiment`)."""
    return build_experiment(cfg, job_dir, sweep_id).run()
