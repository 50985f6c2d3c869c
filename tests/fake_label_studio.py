"""An in-memory Label Studio behind the interface of :class:`alframe.oracles.ls_client.LabelStudioClient`
(no network): projects, tasks with their data and predictions, annotations with ``updated_at``
stamps that only grow, Local Files storages and uploads. Tests annotate through it as people do
in Label Studio (:meth:`FakeLabelStudio.annotate`), from another thread while the oracle polls.

What it copies from a real 1.23.2 server (see ``alframe/oracles/ls_client.py``): saving an
annotation sets its task's ``updated_at``; ``tasks(since=...)`` returns tasks updated after it;
the Skip button stores a cancelled annotation with an empty result.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from alframe.oracles.ls_client import STAMP_FORMAT, Annotation, LabelStudioError, ServerUnavailable, Task


class FakeLabelStudio:
    """See the module docstring.

    Args:
        serve_local_files: False: a Local Files storage is refused as by a server started without
            ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``.
    """

    url = "http://127.0.0.1:1"

    def __init__(self, serve_local_files: bool = True):
        self.lock = threading.RLock()
        self.serve_local_files = serve_local_files
        self.requests = 0
        self.projects: dict[int, dict] = {}
        self.tasks_: dict[int, Task] = {}
        self.task_project: dict[int, int] = {}
        self.predictions: dict[int, list[dict]] = {}
        self.storages: dict[int, list[str]] = {}
        self.uploads: list[str] = []
        self.views: list[str] = []
        self.imports: list[int] = []  # number of tasks of each import request
        self.down = 0  # >0: the next this many requests fail as if the server were gone
        self.calls: list[str] = []
        self._t = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self._next_id = {"task": 1, "annotation": 1, "project": 1}

    # ------------------------------------------------------------------ helpers
    def _hit(self, what: str) -> None:
        self.requests += 1
        self.calls.append(what)
        if self.down > 0:
            self.down -= 1
            raise ServerUnavailable(f"{what}: ConnectError")

    def _stamp(self) -> str:
        self._t += timedelta(milliseconds=10)
        return self._t.strftime(STAMP_FORMAT)

    def _new(self, kind: str) -> int:
        n = self._next_id[kind]
        self._next_id[kind] += 1
        return n

    # ------------------------------------------------------------------ the client interface
    def version(self) -> str:
        self._hit("version")
        return "1.23.2-fake"

    def find_project(self, title: str) -> int | None:
        with self.lock:
            self._hit("find_project")
            return next((p for p, v in sorted(self.projects.items()) if v["title"] == title), None)

    def project(self, pid: int) -> dict:
        with self.lock:
            self._hit("project")
            if pid not in self.projects:
                raise LabelStudioError(f"reading project {pid}: HTTP 404: Not found.")
            return {"id": pid, **self.projects[pid]}

    def create_project(self, title: str, label_config: str, model_version: str) -> int:
        with self.lock:
            self._hit("create_project")
            pid = self._new("project")
            self.projects[pid] = {"title": title, "label_config": label_config, "model_version": model_version}
            return pid

    def set_model_version(self, pid: int, model_version: str) -> None:
        with self.lock:
            self._hit("set_model_version")
            self.projects[pid]["model_version"] = model_version

    def ensure_view(self, pid: int, title: str, data: dict) -> None:
        with self.lock:
            self._hit("ensure_view")
            if title not in self.views:
                self.views.append(title)

    def local_storage(self, pid: int, path) -> int | None:
        with self.lock:
            self._hit("local_storage")
            return 1 if str(path) in self.storages.get(pid, []) else None

    def add_local_storage(self, pid: int, path) -> int:
        with self.lock:
            self._hit("add_local_storage")
            if not self.serve_local_files:
                raise LabelStudioError(f"Label Studio at {self.url} does not serve local files from {path}: start it "
                                       "with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true")
            self.storages.setdefault(pid, []).append(str(path))
            return 1

    def upload(self, pid: int, files: dict) -> dict[str, str]:
        with self.lock:
            self._hit("upload")
            self.uploads += list(files)
            return {name: f"/data/upload/{pid}/0000-{name}" for name in files}

    def import_tasks(self, pid: int, tasks: list[dict]) -> list[int]:
        with self.lock:
            self._hit("import_tasks")
            ids = []
            for t in tasks:
                tid = self._new("task")
                self.tasks_[tid] = Task(id=tid, data=dict(t["data"]), updated_at=self._stamp())
                self.task_project[tid] = pid
                self.predictions[tid] = list(t.get("predictions", []))
                ids.append(tid)
            self.imports.append(len(tasks))
            return ids

    def tasks(self, pid: int, *, ids=None, run=None, round=None, since=None) -> list[Task]:
        with self.lock:
            self._hit("tasks" + ("(round)" if round is not None else "") + ("(since)" if since else ""))
            out = []
            for tid, t in sorted(self.tasks_.items()):
                if self.task_project[tid] != pid or (ids is not None and tid not in ids):
                    continue
                if run is not None and t.data.get("run") != run:
                    continue
                if round is not None and t.data.get("round") != round:
                    continue
                if since is not None and not t.updated_at > since:
                    continue
                out.append(Task(id=t.id, data=dict(t.data), updated_at=t.updated_at,
                                annotations=[Annotation(**vars(a)) for a in t.annotations]))
            return out

    def delete_tasks(self, pid: int, ids: list[int]) -> None:
        with self.lock:
            self._hit("delete_tasks")
            for tid in ids:
                self.tasks_.pop(tid, None)

    # ------------------------------------------------------------------ what people do in Label Studio
    def task_of(self, run: str | None, round: int, index: int) -> Task:
        with self.lock:
            found = [t for t in self.tasks_.values() if t.data.get("round") == round and t.data.get("index") == index
                     and (run is None or t.data.get("run") == run)]
            assert len(found) == 1, f"{len(found)} tasks for index {index} of round {round}"
            return found[0]

    def round_tasks(self, round: int) -> list[Task]:
        with self.lock:
            return [t for t in self.tasks_.values() if t.data.get("round") == round]

    def annotate(self, task_id: int, label: str | None, annotator: int = 1, seconds: float = 2.0) -> int:
        """A submit (``label`` a class name) or a Skip (``label`` None); returns the annotation id."""
        with self.lock:
            t = self.tasks_[task_id]
            stamp = self._stamp()
            a = Annotation(id=self._new("annotation"), annotator=annotator, updated_at=stamp,
                           cancelled=label is None, choice=label, lead_time=seconds)
            t.annotations.append(a)
            t.updated_at = self._stamp()
            return a.id

    def edit(self, annotation_id: int, label: str) -> None:
        """An annotator changes a submitted annotation."""
        with self.lock:
            for t in self.tasks_.values():
                for a in t.annotations:
                    if a.id == annotation_id:
                        a.choice, a.cancelled, a.updated_at = label, False, self._stamp()
                        t.updated_at = self._stamp()
                        return
            raise KeyError(annotation_id)
