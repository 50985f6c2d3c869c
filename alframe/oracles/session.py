"""The oracle session: sends a query batch to the oracle, keeps what is pending across
sessions, and records the labels that come back (the only path for labels into the run)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from alframe import faults, progress
from alframe.data.base import ALData
from alframe.models.base import ALNet
from alframe.oracles.base import LabelRequest, LabelResult, Oracle
from alframe.rundir.state import PendingRequest, PoolState
from alframe.scoring.pool import compute_outputs


class OracleSession:
    """One run's conversation with its oracle.

    A batch may take several sessions (a person quits, labels are handed off to files): the
    indices still waiting and the tally of what came back (labels received, a person's
    seconds per label) live in ``state.progress.pending`` and are saved after every step.

    Args:
        oracle: the oracle of the run.
        data: the run's data (class names, pool images for the model's suggestion).
        state: the pool state; labels enter it only here.
        save: writes ``state`` (and the files derived from it) to the run folder.
        device: where the model's suggestion is computed.
    """

    def __init__(self, oracle: Oracle, data: ALData, state: PoolState, save: Callable[[], None],
                 device: torch.device | str = "cpu"):
        self.oracle, self.data, self.state, self.save, self.device = oracle, data, state, save, device

    def ask(self, round: int, idx: np.ndarray, net: ALNet | None,
            scores: np.ndarray | None = None) -> tuple[bool, dict[str, float]]:
        """Send ``idx`` (``[k] int64`` pool indices) to the oracle for round ``round``.

        Args:
            net: the model whose prediction and confidence are shown as the suggestion, or None
                (not computed for an oracle whose ``uses_suggestion`` is False).
            scores: ``[k]`` acquisition scores of ``idx`` (kept with the pending batch), or None.

        Returns:
            ``(complete, metrics)``: complete is False while labels are pending; metrics (when
            complete) hold ``labels_received``, ``label_seconds``, ``label_seconds_total`` and
            the oracle's own facts (e.g. ``noise_rate``), to log at step = number of labels. They
            are also appended to ``state.progress.unlogged`` and saved with the labels.

        Raises:
            RuntimeError: the oracle labelled indices that were not requested.
        """
        progress_ = self.state.progress
        predicted = confidence = None
        if net is not None and len(idx) and self.oracle.uses_suggestion:
            probs = compute_outputs(net, self.data.train, idx, {"probs"}, device=self.device).probs
            confidence, predicted = (t.numpy() for t in probs.max(dim=1))
        prev = progress_.pending
        pending = PendingRequest(round=round, idx=[int(i) for i in idx],
                                 scores=None if scores is None else [float(v) for v in scores])
        if prev is not None and prev.round == round:  # the tally of earlier sessions of this batch
            pending.received, pending.seconds = prev.received, list(prev.seconds)
            if scores is None and prev.scores is not None:  # a resumed batch keeps its scores
                kept = dict(zip(prev.idx, prev.scores, strict=True))
                pending.scores = [kept[i] for i in pending.idx] if all(i in kept for i in pending.idx) else None
        progress_.pending = pending
        self.save()
        if len(idx) == 0:  # nothing to ask (e.g. seed labels already cover the initial set)
            result = LabelResult(idx=np.empty(0, dtype=np.int64), labels=np.empty(0, dtype=np.int64))
        else:
            faults.point("oracle")
            with progress.paused(self.oracle.interactive):
                result = self.oracle.label(LabelRequest(
                    round=round, idx=idx, predicted=predicted, confidence=confidence,
                    labelled=self.state.labels.copy(),
                    scores=None if pending.scores is None else np.asarray(pending.scores, dtype=float)))
            faults.point("oracle_done")
        extra = set(int(i) for i in result.idx) - set(int(i) for i in idx)
        if extra:
            raise RuntimeError(f"oracle {type(self.oracle).__name__} labelled indices that were not requested: "
                               f"{sorted(extra)[:10]}")
        self.state.label(result.idx, result.labels, round, num_classes=self.data.num_classes)
        if result.corrections and not result.pending:  # labels a person changed after they were used
            self.state.correct(np.fromiter(result.corrections, dtype=np.int64),
                               np.fromiter(result.corrections.values(), dtype=np.int64), round,
                               num_classes=self.data.num_classes)
        pending.received += int(len(result.idx))
        if result.seconds is not None:
            pending.seconds += [float(t) for t in result.seconds]
        if not result.pending and len(idx) and self.state.n_labelled == 0:  # never train on nothing
            progress.console.print(f"Every sample of round {round} was skipped, and the first round needs at least "
                                   "one label: it stays pending. Continue with loop.resume=true and label at least "
                                   "one sample.", style="yellow")
            self.oracle.reopen(round, idx)
            result.pending = True
        if result.pending:
            if pending.scores is not None:
                pending.scores = [v for i, v in zip(idx, pending.scores, strict=True) if self.state.labelled_round[i] < 0]
            pending.idx = [int(i) for i in idx if self.state.labelled_round[i] < 0]
            self.save()
            return False, {}
        metrics = {"labels_received": float(pending.received)}
        if pending.seconds:
            metrics["label_seconds"] = float(np.mean(pending.seconds))
            metrics["label_seconds_total"] = float(np.sum(pending.seconds))
        metrics.update(result.info)
        progress_.pending = None
        progress_.round = round
        # saved with the labels; the loop sends them to MLflow with its next request
        progress_.unlogged.append({"step": int(self.state.n_labelled), "metrics": metrics})
        self.save()
        return True, metrics
