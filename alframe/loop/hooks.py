"""Round hooks: the per-round extras of the loop, plugged in at named moments (like Lightning's
``Callback``).

The loop (:class:`alframe.loop.experiment.Experiment`) calls every hook of ``hooks`` in the
config, in order, at these moments:

==========================================  =====================================================
``setup(run)``                              once, after the run's state is loaded or created
``training_set(run, round, previous)``      before round ``round``'s fit: extra pseudo-labelled
                                            samples for this round only, and metrics
``on_round_end(run, round, net)``           after round ``round``'s model is evaluated: metrics,
                                            logged with the round's metrics (one request)
``stop_reason(run)``                        after each round: why the run should stop, or None
``on_finish(run, net, tracker)``            once the run is complete (every label in)
==========================================  =====================================================

Adding a stop rule or a per-round metric is one :class:`RoundHook` subclass and one entry under
``hooks:`` in the config (e.g. ``+hooks.my_metric._target_=my_package.MyMetric``). The shipped
hooks: :class:`PseudoLabels` (CEAL), :class:`TargetAccuracy`,
:class:`~alframe.loop.stopping.StabilisingPredictions`, :class:`MachineLabelEvidence` and
:class:`ModelLogging`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alframe.config.settings import Settings
from alframe.data.base import ALData
from alframe.export.mlmodel import MODEL_DIR, log_model, write_preprocessing
from alframe.loop import machine_labels
from alframe.metrics import labels_to_target
from alframe.models.base import ALNet
from alframe.rundir.state import PoolState
from alframe.scoring.pool import compute_outputs


@dataclass
class Run:
    """What a hook may read of the run (the pool state only through its own methods).

    Attributes:
        settings: the checked settings.
        data: the run's data.
        state: its pool state (labels enter only through the oracle; hooks read it).
        run_dir: its folder (a hook may keep its own file there).
        device: where to run a network for scoring.
    """

    settings: Settings
    data: ALData
    state: PoolState
    run_dir: Path
    device: torch.device

    def probs(self, net: ALNet, idx: np.ndarray) -> torch.Tensor:
        """``[len(idx), C] float32`` class probabilities of ``net`` on train-source samples ``idx``."""
        return compute_outputs(net, self.data.train, idx, {"probs"}, batch_size=self.settings.loop.eval_batch_size,
                               device=self.device).probs


Pseudo = tuple[np.ndarray, np.ndarray]  # (idx [P] int64, labels [P] int64)


class RoundHook:
    """A per-round extra of the loop. Every moment is optional: the defaults do nothing."""

    def setup(self, run: Run) -> None:
        """Once, after the run's state is loaded or created, before any round."""

    def training_set(self, run: Run, round: int, previous: Callable[[], ALNet | None]
                     ) -> tuple[Pseudo | None, dict[str, float]]:
        """Extra training samples for round ``round`` only (never labels of the pool state).

        Args:
            previous: returns the previous round's model (loaded on demand), or None.

        Returns:
            ``((idx [P] int64, labels [P] int64) or None, metrics)``.
        """
        return None, {}

    def on_round_end(self, run: Run, round: int, net: ALNet, tracker) -> dict[str, float]:
        """After round ``round``'s model is evaluated; returns metrics to log at step = labels."""
        return {}

    def stop_reason(self, run: Run) -> str | None:
        """Why the run should stop now, or None."""
        return None

    def on_finish(self, run: Run, net: ALNet | None, tracker) -> None:
        """Once the run is complete; ``net`` is the last round's model (None if none was trained)."""


class PseudoLabels(RoundHook):
    """CEAL pseudo-labels (Wang et al. 2017, "Cost-Effective Active Learning for Deep Image
    Classification"): pool samples whose class probability under the previous round's model is
    at least ``loop.pseudo_label_threshold`` join round ``r``'s training set with the predicted
    class. Recomputed every round, never written to the pool state, never counted in the budget.
    Off while the threshold is null."""

    def training_set(self, run, round, previous):
        threshold = run.settings.loop.pseudo_label_threshold
        if threshold is None or round == 0:
            return None, {}
        prev, pool = previous(), run.state.pool_idx
        if prev is None or len(pool) == 0:
            return None, {"pseudo_labels": 0.0}
        conf, pred = (t.numpy() for t in run.probs(prev, pool).max(dim=1))
        keep = conf >= float(threshold)
        idx, y = pool[keep], pred[keep].astype(np.int64)
        info = {"pseudo_labels": float(len(idx))}
        if run.data.targets is not None and len(idx):
            info["pseudo_label_accuracy"] = float((np.asarray(run.data.targets)[idx] == y).mean())
        return (idx, y), info


class TargetAccuracy(RoundHook):
    """Stop once ``loop.target_metric`` reaches ``loop.target_accuracy`` (off while null)."""

    def stop_reason(self, run):
        loop = run.settings.loop
        if loop.target_accuracy is None:
            return None
        reached = labels_to_target(run.state.progress.history, loop.target_accuracy, loop.target_metric)
        if np.isnan(reached):
            return None
        return f"{loop.target_metric} reached loop.target_accuracy={loop.target_accuracy} at {int(reached)} labels"


class MachineLabelEvidence(RoundHook):
    """Simulations (stored labels): the count and accuracy of machine labels per confidence
    threshold over the pool, every round (:mod:`alframe.loop.machine_labels`); off with
    ``loop.machine_label_evidence=false``."""

    def on_round_end(self, run, round, net, tracker):
        pool = run.state.pool_idx
        if run.data.targets is None or not len(pool) or not run.settings.loop.machine_label_evidence:
            return {}
        conf, pred = (t.numpy() for t in run.probs(net, pool).max(dim=1))
        correct = pred == np.asarray(run.data.targets)[pool]
        return machine_labels.as_metrics(machine_labels.evidence(conf, correct))


class ModelLogging(RoundHook):
    """The model as an MLflow model (:mod:`alframe.export.mlmodel`): ``preprocessing.json`` in the
    run folder at setup (read by ``alframe-predict``), every round's model with
    ``mlflow.log_model_every_round=true``, and the final one when ``mlflow.log_model`` is on."""

    def setup(self, run):
        write_preprocessing(run.run_dir, run.settings, run.data)

    def on_round_end(self, run, round, net, tracker):
        if run.settings.mlflow.log_model_every_round:
            log_model(tracker, run.run_dir, run.settings, run.data, net, f"models/round_{round}")
        return {}

    def on_finish(self, run, net, tracker):
        if net is not None and run.settings.mlflow.log_model:
            log_model(tracker, run.run_dir, run.settings, run.data, net, MODEL_DIR)
