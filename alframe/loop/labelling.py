"""What the labelling job adds to each round of the loop (:class:`alframe.loop.experiment.Experiment`).

- the stopping criterion of stabilising predictions (:mod:`alframe.loop.stopping`): ``stop_kappa``
  every round, and the stop decision;
- machine-label evidence in simulations (:mod:`alframe.loop.machine_labels`; ``loop.machine_label_evidence``);
- the trained model as an MLflow model (:mod:`alframe.export.mlmodel`): the final one when the run
  finishes (``mlflow.log_model``) and, with ``mlflow.log_model_every_round=true``, every round's;
- ``preprocessing.json`` in the run folder (read by ``alframe-predict``).

The loop calls :meth:`LabellingJob.after_round`, :meth:`LabellingJob.stop_reason` and
:meth:`LabellingJob.finish`; everything else stays here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from alframe.data.base import ALData
from alframe.export.mlmodel import MODEL_DIR, log_model, write_preprocessing
from alframe.loop import machine_labels
from alframe.loop.stopping import StabilisingPredictions
from alframe.models.base import ALNet
from alframe.rundir.state import PoolState
from alframe.scoring.pool import compute_outputs


class LabellingJob:
    """Per-round additions of one run.

    Args:
        cfg: the run's config.
        data: its data.
        state: its pool state (read only here).
        run_dir: its folder.
        device: where to run the network for scoring.

    Raises:
        ConfigError: bad ``loop.stop_*`` values (before any training).
    """

    def __init__(self, cfg: DictConfig, data: ALData, state: PoolState, run_dir: Path, device: torch.device):
        self.cfg, self.data, self.state, self.run_dir, self.device = cfg, data, state, Path(run_dir), device
        self.stopper = StabilisingPredictions(cfg, state, run_dir)
        self.batch_size = int(cfg.loop.eval_batch_size)
        write_preprocessing(self.run_dir, cfg, data)

    def _probs(self, net: ALNet, idx: np.ndarray) -> torch.Tensor:
        return compute_outputs(net, self.data.train, idx, {"probs"}, batch_size=self.batch_size,
                               device=self.device).probs

    def after_round(self, round: int, net: ALNet, tracker) -> dict[str, float]:
        """Score the stop set (and, in simulation, the pool) with round ``round``'s model, log
        the metrics at step = number of labels, and log the model when asked for every round.

        Returns:
            The metrics logged (``stop_kappa``, ``machine_labels/...``).
        """
        metrics: dict[str, float] = {}
        if self.stopper.enabled:
            metrics.update(self.stopper.update(round, self._probs(net, self.stopper.idx).argmax(dim=1).numpy()))
        pool = self.state.pool_idx
        if self.data.targets is not None and len(pool) and self.cfg.loop.get("machine_label_evidence", True):
            conf, pred = (t.numpy() for t in self._probs(net, pool).max(dim=1))
            correct = pred == np.asarray(self.data.targets)[pool]
            metrics.update(machine_labels.as_metrics(machine_labels.evidence(conf, correct)))
        if metrics:
            tracker.log_metrics(metrics, step=self.state.n_labelled)
        if self.cfg.mlflow.get("log_model_every_round"):
            log_model(tracker, self.run_dir, self.cfg, self.data, net, f"models/round_{round}")
        return metrics

    def stop_reason(self) -> str | None:
        """The stabilising-predictions stop reason, or None."""
        return self.stopper.reason()

    def finish(self, tracker, net: ALNet | None) -> str | None:
        """Log the final model (when one was trained and ``mlflow.log_model`` is on); returns its
        ``runs:/`` URI or None."""
        if net is None or not self.cfg.mlflow.get("log_model", True):
            return None
        return log_model(tracker, self.run_dir, self.cfg, self.data, net, MODEL_DIR)
