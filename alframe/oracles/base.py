"""Oracle contract: the only path by which labels enter an experiment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alframe.data.base import ALData


@dataclass
class LabelRequest:
    """One query batch sent to an oracle.

    Attributes:
        round: the round the labels will belong to (0 = initial labelled set).
        idx: ``[k] int64`` absolute train-source indices to label.
        predicted: ``[k] int64`` the model's predicted class (the suggestion), or None
            (round 0 has no model yet).
        confidence: ``[k] float`` the model's probability of ``predicted``, or None.
    """

    round: int
    idx: np.ndarray
    predicted: np.ndarray | None = None
    confidence: np.ndarray | None = None


@dataclass
class LabelResult:
    """What an oracle returned for a :class:`LabelRequest`.

    Attributes:
        idx: ``[j] int64`` indices that received a label (a subset of the request; skipped
            samples are left out and return to the pool).
        labels: ``[j] int64`` class labels in ``[0, C)``.
        seconds: ``[j] float`` seconds a person spent per label, or None for simulations.
        pending: True when labelling is not finished (a person quit, or labels were handed
            to an external tool): the loop saves what it got and stops; ``loop.resume=true``
            continues later.
        info: extra per-batch facts to log as metrics (e.g. ``noise_rate``).
    """

    idx: np.ndarray
    labels: np.ndarray
    seconds: np.ndarray | None = None
    pending: bool = False
    info: dict[str, float] = field(default_factory=dict)


class Oracle:
    """Base class of every oracle.

    Lifecycle: :meth:`setup` once per run (with the data and the run directory), then
    :meth:`label` once per query batch.
    """

    name: str = "oracle"
    #: True when a person answers (label_seconds are logged, progress output pauses).
    interactive: bool = False

    def setup(self, data: ALData, run_dir: Path) -> None:
        """Bind the oracle to the experiment's data and output folder."""
        self.data, self.run_dir = data, Path(run_dir)

    def label(self, request: LabelRequest) -> LabelResult:
        """Labels for ``request.idx`` (see :class:`LabelResult`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (servers, files); called when the run ends or stops."""
