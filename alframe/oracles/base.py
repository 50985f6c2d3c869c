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
        labelled: ``[N] int64`` the labels recorded so far for every train-source sample
            (-1 = not labelled), or None. Only labels an oracle gave; lets a tool that exports
            a whole project recognise rows of earlier rounds.
        scores: ``[k] float`` the strategy's acquisition score of each index, or None (round 0, a
            strategy without per-sample scores).
    """

    round: int
    idx: np.ndarray
    predicted: np.ndarray | None = None
    confidence: np.ndarray | None = None
    labelled: np.ndarray | None = None
    scores: np.ndarray | None = None


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
        corrections: ``{index: label}`` for samples labelled in earlier rounds whose label a person
            changed since it was used (``LabelRequest.labelled`` holds the recorded ones); applied
            with :meth:`~alframe.rundir.state.PoolState.correct` when the batch is complete.
    """

    idx: np.ndarray
    labels: np.ndarray
    seconds: np.ndarray | None = None
    pending: bool = False
    info: dict[str, float] = field(default_factory=dict)
    corrections: dict[int, int] = field(default_factory=dict)


class Oracle:
    """Base class of every oracle.

    Lifecycle: :meth:`setup` once per run (with the data and the run directory), then
    :meth:`label` once per query batch.
    """

    name: str = "oracle"
    #: True when a person answers (label_seconds are logged, progress output pauses).
    interactive: bool = False
    #: False when the oracle never reads ``LabelRequest.predicted`` / ``confidence`` (simulations):
    #: the loop then skips the model's forward pass that computes the suggestion.
    uses_suggestion: bool = True

    def setup(self, data: ALData, run_dir: Path) -> None:
        """Bind the oracle to the experiment's data and output folder."""
        self.data, self.run_dir = data, Path(run_dir)

    def label(self, request: LabelRequest) -> LabelResult:
        """Labels for ``request.idx`` (see :class:`LabelResult`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (servers, files); called when the run ends or stops."""

    def reopen(self, round: int, idx: np.ndarray) -> None:
        """Ask round ``round``'s batch ``idx`` again: called when every sample of a batch that
        must bring at least one label (the first, with an empty labelled set) was skipped. The
        default forgets the skips a person gave in the page or terminal (``answers/``)."""
        from alframe.oracles.answers import AnswerStore

        if getattr(self, "run_dir", None) is not None:
            AnswerStore(self.run_dir, round, idx).drop_skips()


def parse_label(value: str | int, class_names: list[str]) -> int:
    """A class given by a person or a file, as a class number in ``[0, C)``.

    ``value`` may be a class name (exact, then case-insensitive) or a class number. A name
    wins over a number when both would match (class ``"7"`` at position 3 is class 3).

    Args:
        value: the text (or int) given.
        class_names: ``[C]`` the dataset's class names.

    Raises:
        ValueError: naming the value and the allowed class names/numbers.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        text = str(int(value))
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f"label {value!r} must be a class name or number")
    if text in class_names:
        return class_names.index(text)
    lowered = [c.lower() for c in class_names]
    if text.lower() in lowered and lowered.count(text.lower()) == 1:
        return lowered.index(text.lower())
    if text.lstrip("-").isdigit():
        n = int(text)
        if 0 <= n < len(class_names):
            return n
    shown = ", ".join(f"{k}={c}" for k, c in enumerate(class_names)) if len(class_names) <= 30 \
        else ", ".join(class_names[:30]) + ", ..."
    raise ValueError(f"unknown class {text!r}: allowed are the class names or numbers 0..{len(class_names) - 1} "
                     f"({shown})")
