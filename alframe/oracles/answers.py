"""Answers a person gave, saved the moment they are given.

Human oracles (terminal, web) write every answer to ``<run_dir>/answers/round_<r>.json``
atomically (temp file + ``os.replace``), so killing the process, closing the browser or a
power cut loses at most the answer being typed. When the run resumes and the loop asks for
the same batch again, the stored answers are returned without asking the person twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from alframe.oracles.base import LabelResult
from alframe.rundir.state import atomic_write

SKIP = "skip"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


class AnswerStore:
    """The answers of one query batch (one round), persisted after every change.

    An answer is a class label (``int`` in ``[0, C)``) or :data:`SKIP` (the sample returns
    to the pool), with the seconds the person spent on it. The order in which answers were
    given is kept, so :meth:`undo` removes the most recent one.

    Args:
        run_dir: the run folder; the file is ``<run_dir>/answers/round_<round>.json``.
        round: the round of the batch.
        idx: ``[k] int`` the batch's absolute indices, in display order.

    Answers on disk for indices outside ``idx`` (a resumed loop re-asks only the samples it
    has not recorded yet) are kept in the file but not used.
    """

    def __init__(self, run_dir: Path, round: int, idx: np.ndarray):
        self.path = Path(run_dir) / "answers" / f"round_{int(round)}.json"
        self.round = int(round)
        self.idx = [int(i) for i in idx]
        self._members = set(self.idx)
        #: index -> {"label": int | "skip", "seconds": float, "time": unix seconds}
        self.answers: dict[int, dict] = {}
        self.order: list[int] = []
        self._kept_outside: list[dict] = []
        if self.path.is_file():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            for rec in saved.get("answers", []):
                i = int(rec["index"])
                if i not in self._members:
                    # The pending batch shrinks when a resumed loop already recorded part of it;
                    # answers for indices outside it are kept on disk but not used here.
                    self._kept_outside.append(rec)
                    continue
                self.answers[i] = {"label": rec["label"], "seconds": float(rec.get("seconds", 0.0)),
                                   "time": float(rec.get("time", 0.0))}
                self.order.append(i)

    # ------------------------------------------------------------------ queries
    def __contains__(self, i: int) -> bool:
        return int(i) in self.answers

    @property
    def n_answered(self) -> int:
        """Answers given (labels and skips)."""
        return len(self.answers)

    @property
    def complete(self) -> bool:
        """True when every sample of the batch has an answer."""
        return len(self.answers) == len(self.idx)

    def next_unanswered(self) -> int | None:
        """The first index in display order without an answer, or None."""
        for i in self.idx:
            if i not in self.answers:
                return i
        return None

    def result(self, pending: bool = False) -> LabelResult:
        """The labels given so far as a :class:`LabelResult` (skips left out)."""
        idx = [i for i in self.idx if i in self.answers and self.answers[i]["label"] != SKIP]
        labels = [int(self.answers[i]["label"]) for i in idx]
        seconds = [self.answers[i]["seconds"] for i in idx]
        n_skipped = sum(1 for a in self.answers.values() if a["label"] == SKIP)
        return LabelResult(idx=np.asarray(idx, dtype=np.int64), labels=np.asarray(labels, dtype=np.int64),
                           seconds=np.asarray(seconds, dtype=float), pending=pending,
                           info={"skipped": float(n_skipped)})

    # ------------------------------------------------------------------ changes (each one saved)
    def set(self, i: int, label: int | str, seconds: float) -> None:
        """Record ``label`` (a class number or :data:`SKIP`) for index ``i`` and save.

        Raises:
            KeyError: ``i`` is not in this batch.
        """
        i = int(i)
        if i not in self._members:
            raise KeyError(f"index {i} is not in the batch of round {self.round}")
        if i in self.answers:
            self.order.remove(i)
        self.answers[i] = {"label": label if label == SKIP else int(label), "seconds": float(seconds),
                           "time": time.time()}
        self.order.append(i)
        self.save()

    def undo(self) -> int | None:
        """Remove the most recent answer and save; returns its index (None when empty)."""
        if not self.order:
            return None
        i = self.order.pop()
        del self.answers[i]
        self.save()
        return i

    def drop_skips(self) -> int:
        """Forget the skips of this batch (they are asked again) and save; returns how many."""
        skipped = [i for i in self.order if self.answers[i]["label"] == SKIP]
        for i in skipped:
            self.order.remove(i)
            del self.answers[i]
        self.save()
        return len(skipped)

    def save(self) -> None:
        """Write the file atomically."""
        records = [{"index": i, **self.answers[i]} for i in self.order]
        records += self._kept_outside
        atomic_write_text(self.path, json.dumps({"round": self.round, "idx": self.idx, "answers": records},
                                                indent=1))
