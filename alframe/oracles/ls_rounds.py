"""What the live Label Studio oracle keeps in the run folder, and how it reads a task's answer.

``<run_dir>/label_studio.json`` (written atomically after every change) holds the run's key in
task data (``data.run``), the project id and, per round, the task id of each queried index, when
the batch was imported and which answer each index got when the round was used. With it a resumed run finds the same tasks
(none imported twice) and the answers given meanwhile; Label Studio holds the answers.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from alframe.oracles.answers import SKIP, atomic_write_text
from alframe.oracles.base import parse_label
from alframe.oracles.ls_client import Annotation, Task

STATE_NAME = "label_studio.json"
#: an answer taken when the wait limit passed without one: the sample went back to the pool
RETURNED = "returned"


@dataclass
class RoundTasks:
    """One round's batch in Label Studio."""

    tasks: dict[int, int] = field(default_factory=dict)  # index -> task id
    imported_at: float | None = None  # unix seconds, when the batch appeared in Label Studio
    used: dict[int, object] = field(default_factory=dict)  # index -> class number, SKIP or RETURNED


class LiveState:
    """The oracle's file in the run folder (see the module docstring).

    Args:
        run_dir: the run folder.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / STATE_NAME
        self.run = f"{Path(run_dir).name}-{secrets.token_hex(3)}"
        self.project: int | None = None
        self.rounds: dict[int, RoundTasks] = {}
        if self.path.is_file():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self.run, self.project = saved["run"], saved.get("project")
            for r, rec in saved.get("rounds", {}).items():
                self.rounds[int(r)] = RoundTasks(
                    tasks={int(i): int(t) for i, t in rec.get("tasks", {}).items()},
                    imported_at=rec.get("imported_at"),
                    used={int(i): (v if v in (SKIP, RETURNED) else int(v)) for i, v in rec.get("used", {}).items()})

    def round(self, r: int) -> RoundTasks:
        return self.rounds.setdefault(int(r), RoundTasks())

    def source(self, index: int, round: int, task_id: int) -> bool:
        """True when task ``task_id`` gave the class label of ``index`` recorded in ``round``."""
        rt = self.rounds.get(int(round))
        return rt is not None and rt.tasks.get(int(index)) == int(task_id) \
            and isinstance(rt.used.get(int(index)), int)

    def save(self) -> None:
        rounds = {str(r): {"tasks": {str(i): t for i, t in rt.tasks.items()}, "imported_at": rt.imported_at,
                           "used": {str(i): v for i, v in rt.used.items()}} for r, rt in sorted(self.rounds.items())}
        atomic_write_text(self.path, json.dumps({"version": 1, "run": self.run, "project": self.project,
                                                 "saved_at": time.time(), "rounds": rounds}, indent=1))


def latest(annotations: list[Annotation]) -> Annotation | None:
    """The submitted annotation that counts: the latest by ``updated_at`` (then id)."""
    return max(annotations, key=lambda a: (a.updated_at, a.id)) if annotations else None


def answer_of(task: Task, class_names: list[str]) -> tuple[object, float] | None:
    """``(class number or SKIP, seconds)`` of a task's latest annotation, or None when it has no
    usable answer yet (no annotation, an empty result, a class alframe does not know)."""
    a = latest(task.annotations)
    if a is None:
        return None
    if a.cancelled:
        return SKIP, a.lead_time
    if a.choice is None:
        return None
    try:
        return parse_label(a.choice, class_names), a.lead_time
    except ValueError:
        return None


def disagrees(task: Task) -> bool:
    """True when two annotators' latest answers (skips left out) of ``task`` differ."""
    per_annotator: dict[object, Annotation] = {}
    for a in sorted(task.annotations, key=lambda a: (a.updated_at, a.id)):
        if not a.cancelled and a.choice is not None:
            per_annotator[a.annotator] = a
    labels = {a.choice for a in per_annotator.values()}
    return len(labels) > 1
