"""``oracle=label_studio``: each query batch goes to a running Label Studio and comes back by itself.

Per round the batch is imported as tasks (the model's suggestion as a prediction with its
score; index, round, acquisition score and rank as task data, so a person can sort and filter
by them), then alframe polls for the annotations of exactly those tasks (only what changed since
the last poll) and goes on when every task has an answer. Label Studio holds the answers; the
task ids live in ``<run_dir>/label_studio.json`` (:mod:`alframe.oracles.ls_rounds`), so Ctrl-C,
a crash or a reboot loses nothing and ``loop.resume=true`` picks up the same tasks.

Answers: a task's latest submitted annotation counts (several annotators: the latest of all);
a cancelled one (Skip) returns the sample to the pool. Tasks where annotators disagree are counted
(``annotator_disagreements``). A used label changed later in Label Studio is taken with the next
batch as a correction (``labels_corrected``; :meth:`~alframe.rundir.state.PoolState.correct`).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from xml.etree import ElementTree

import numpy as np

from alframe import progress
from alframe.oracles import label_studio
from alframe.oracles.answers import SKIP
from alframe.oracles.base import LabelRequest, LabelResult, Oracle
from alframe.oracles.ls_client import (
    API_KEY_ENV,
    STAMP_FORMAT,
    LabelStudioClient,
    LabelStudioError,
    ServerUnavailable,
    Task,
)
from alframe.oracles.ls_rounds import RETURNED, LiveState, answer_of, disagrees, latest
from alframe.oracles.render import save_png

MODEL_VERSION = "alframe"  # one version for every round: Label Studio pre-labels with the project's version
VIEW = "alframe: to label"
IMAGES = ("auto", "local_files", "upload")
_HIDDEN = [f"tasks:{c}" for c in (
    "inner_id", "completed_at", "cancelled_annotations", "total_predictions", "annotators", "annotations_results",
    "annotations_ids", "predictions_score", "predictions_model_versions", "predictions_results", "file_upload",
    "storage_filename", "created_at", "updated_at", "updated_by", "avg_lead_time", "draft_exists", "comment_count",
    "comment_authors", "last_comment_updated_at", "unresolved_comment_count", "data.file", "data.run")]
#: the Data Manager tab alframe adds: unanswered tasks, highest acquisition score first, alframe's columns
VIEW_DATA = {
    "ordering": ["-tasks:data.score"],
    "columnsDisplayType": {f"tasks:data.{c}": "Number" for c in ("score", "round", "index", "rank", "confidence")},
    "hiddenColumns": {"explore": _HIDDEN, "labeling": _HIDDEN},
    "filters": {"conjunction": "and", "items": [
        {"filter": f"filter:tasks:{c}", "operator": "equal", "type": "Number", "value": 0}
        for c in ("total_annotations", "cancelled_annotations")]}}
MARGIN_S = 5.0  # polls re-read this many seconds before the watermark (a late commit is not missed)
MAX_BACKOFF_S = 30.0


def _stamp(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


class LabelStudioOracle(Oracle):
    """Labels come from people working in a running Label Studio (see the module docstring).

    Args:
        url: the Label Studio server (``http(s)://host:port``, no credentials in it).
        project: a project id, or a title (created on first use with alframe's labelling config).
        images: ``local_files`` (a Local Files storage on ``<run_dir>/queries``; the server must run
            with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
            ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` above the run folder), ``upload`` (the images
            are uploaded) or ``auto`` (local files when the server allows, else upload).
        poll_s: seconds between two polls while people label.
        wait_limit_s: after this many seconds from a batch's import the round goes on with the
            answers it has; unanswered tasks are removed and their samples go back to the pool.
            None: wait until every task is answered.

    The API key comes only from the environment variable ``LABEL_STUDIO_API_KEY`` (a personal
    access token or a legacy token); it is never written anywhere.

    Raises:
        ValueError: a bad url, project, images, poll_s or wait_limit_s.
        LabelStudioError: at setup, no key, a refused key, an unknown project id, a project whose
            classes differ, or (``images=local_files``) a server that does not serve local files.
        ConnectionError: at setup, the server does not answer.
    """

    name = "label_studio"
    interactive = True

    def __init__(self, url: str = "http://localhost:8080", project: int | str = "alframe", images: str = "auto",
                 poll_s: float = 2.0, wait_limit_s: float | None = None):
        url = str(url).rstrip("/")
        if not url.startswith(("http://", "https://")) or "@" in url.split("/")[2]:
            raise ValueError(f"oracle.url={url!r} must be http(s)://host:port without credentials "
                             f"(the API key comes from the environment variable {API_KEY_ENV})")
        if isinstance(project, bool) or not str(project).strip():
            raise ValueError(f"oracle.project={project!r} must be a project id or a title")
        if images not in IMAGES:
            raise ValueError(f"oracle.images={images!r}: allowed are {', '.join(IMAGES)}")
        if float(poll_s) < 0.1:
            raise ValueError(f"oracle.poll_s={poll_s} must be >= 0.1")
        if wait_limit_s is not None and float(wait_limit_s) <= 0:
            raise ValueError(f"oracle.wait_limit_s={wait_limit_s} must be > 0 or null")
        self.url, self.images, self.poll_s = url, images, float(poll_s)
        self.project = int(project) if str(project).strip().isdigit() else str(project).strip()
        self.wait_limit_s = None if wait_limit_s is None else float(wait_limit_s)
        self.client: LabelStudioClient | None = None  # tests put a fake here before setup
        self.sleep = time.sleep
        self.watermark: str | None = None  # the newest updated_at read (server clock)
        self.warned: set[tuple] = set()  # answers already reported as unusable

    # ------------------------------------------------------------------ setup: everything checked once
    def setup(self, data, run_dir) -> None:
        super().setup(data, run_dir)
        self.state = LiveState(self.run_dir)
        self.queries = (self.run_dir / "queries").resolve()
        self.queries.mkdir(parents=True, exist_ok=True)
        if self.client is None:
            key = os.environ.get(API_KEY_ENV, "").strip()
            if not key:
                raise LabelStudioError(f"oracle=label_studio: set the environment variable {API_KEY_ENV} to a Label "
                                       "Studio API key (Account & Settings > Personal Access Token, or a legacy token)")
            self.client = LabelStudioClient(self.url, key)
        try:
            version = self.client.version()
            self.pid = self._project()
            self.mode = self._images()
            try:  # a tab that lists the unanswered tasks, highest acquisition score first
                self.client.ensure_view(self.pid, VIEW, VIEW_DATA)
            except LabelStudioError:
                pass  # a convenience: the default tab shows the same tasks
        except ServerUnavailable as e:
            raise ConnectionError(f"cannot reach Label Studio at {self.url} ({e}): start it (see alframe's docs, "
                                  "'Label Studio, live') or set oracle.url") from None
        self.state.project = self.pid
        self.state.save()
        progress.console.print(f"Label Studio {version} at {self.url}, project {self.pid}: {self._link()}; images "
                               + ("from a Local Files storage on " + str(self.queries) if self.mode == "local_files"
                                  else "uploaded"), soft_wrap=True)

    def _link(self) -> str:
        return f"{self.url}/projects/{self.pid}/data"

    def _project(self) -> int:
        names = self.data.class_names
        pid = self.state.project  # a resumed run stays with its project
        if pid is None and isinstance(self.project, int):
            pid = self.project
        if pid is None:
            pid = self.client.find_project(self.project)
            if pid is None:
                pid = self.client.create_project(self.project, config(names), MODEL_VERSION)
                progress.console.print(f"Created Label Studio project {self.project!r} (id {pid}) with alframe's "
                                       f"labelling config ({len(names)} classes)", soft_wrap=True)
        p = self.client.project(pid)
        found = classes_of(p["label_config"])
        if found != list(names):
            raise LabelStudioError(f"Label Studio project {pid} ({p['title']!r}) has the classes {found[:20]}, this "
                                   f"run has {list(names)[:20]}: use another oracle.project (a new title is created "
                                   "with alframe's labelling config)")
        if p["model_version"] != MODEL_VERSION:
            self.client.set_model_version(pid, MODEL_VERSION)
        return pid

    def _images(self) -> str:
        if self.images == "upload":
            return "upload"
        try:
            if self.client.local_storage(self.pid, self.queries) is None:
                self.client.add_local_storage(self.pid, self.queries)
            return "local_files"
        except LabelStudioError as e:
            if self.images == "local_files" or "local files" not in str(e):
                raise
            progress.console.print(f"[yellow]{e}; uploading the images instead[/yellow]", soft_wrap=True)
            return "upload"

    # ------------------------------------------------------------------ one batch
    def label(self, request: LabelRequest) -> LabelResult:
        r, idx = int(request.round), [int(i) for i in request.idx]
        answers: dict[int, tuple[object, float]] = {}
        current: dict[int, Task] = {}
        corrections: dict[int, int] = {}
        t0, requests0, shown = time.monotonic(), self.client.requests, None
        try:
            tasks = self._retry("importing the batch", self._tasks_for, request)
            progress.console.print(f"round {r}: {len(idx)} samples to label in Label Studio: {self._link()}",
                                   soft_wrap=True)
            # first read: every task of this run (this batch's answers, and changes to labels already used)
            polled = self._retry("reading the tasks", self.client.tasks, self.pid, run=self.state.run)
            gone = [i for i, t in tasks.items() if t not in {x.id for x in polled}]
            if gone:  # deleted in Label Studio meanwhile: imported again
                rt = self.state.round(r)
                for i in gone:
                    del rt.tasks[i]
                progress.console.print(f"round {r}: {len(gone)} task(s) were deleted in Label Studio; imported again",
                                       soft_wrap=True)
                tasks = self._retry("importing the batch", self._tasks_for, request)
                polled += self._retry("reading the batch", self.client.tasks, self.pid, ids=[tasks[i] for i in gone])
            by_task = {t: i for i, t in tasks.items()}
            self.watermark = None
            while True:
                for task in polled:
                    self._read(task, r, by_task, request, answers, current, corrections)
                done = (len(answers), sum(1 for a, _ in answers.values() if a == SKIP))
                if done != shown:
                    shown = done
                    progress.console.print(f"round {r}: {done[0]} of {len(idx)} labelled in Label Studio"
                                           + (f" ({done[1]} skipped)" if done[1] else ""), soft_wrap=True)
                if len(answers) == len(idx) or self._expired(r):
                    break
                since = self._since(self.watermark)
                self.sleep(self.poll_s)
                # then only what changed since the newest change read (a few seconds of margin)
                polled = self._retry("polling", self.client.tasks, self.pid, run=self.state.run, since=since)
        except KeyboardInterrupt:
            self.state.save()
            progress.console.print(f"\n[yellow]Interrupted: round {r} stays in Label Studio ({len(answers)} of "
                                   f"{len(idx)} answered); run again with loop.resume=true to go on with the same "
                                   "tasks and the answers given meanwhile.[/yellow]", soft_wrap=True)
            return LabelResult(idx=np.empty(0, dtype=np.int64), labels=np.empty(0, dtype=np.int64), pending=True)
        if answers and all(a == SKIP for a, _ in answers.values()) and request.labelled is not None \
                and not (request.labelled >= 0).any():  # the first labels cannot all be skips
            progress.console.print(f"[yellow]round {r}: every sample was skipped, and the first round needs at "
                                   "least one label: the batch is imported again[/yellow]", soft_wrap=True)
            self.reopen(r, request.idx)
            return self.label(request)
        return self._finish(request, tasks, answers, current, corrections, time.monotonic() - t0,
                            self.client.requests - requests0)

    def reopen(self, round: int, idx: np.ndarray) -> None:
        """Ask round ``round``'s batch again: its tasks are removed from Label Studio and forgotten,
        so the next :meth:`label` imports them anew (with no answers)."""
        rt = self.state.round(round)
        self._retry("removing the batch", self.client.delete_tasks, self.pid, list(rt.tasks.values()))
        self.state.rounds.pop(int(round), None)
        self.state.save()

    def _read(self, task: Task, r: int, by_task: dict[int, int], request: LabelRequest, answers: dict,
              current: dict, corrections: dict) -> None:
        """Take one polled task: an answer of this batch, or a change to a label already used."""
        if self.watermark is None or task.updated_at > self.watermark:
            self.watermark = task.updated_at
        i = by_task.get(task.id)
        if i is not None:
            current[i] = task
            got = answer_of(task, self.data.class_names)
            if got is None:
                answers.pop(i, None)
                a = latest(task.annotations)
                if a is not None and (task.id, a.id, a.updated_at) not in self.warned:  # not a class of this run
                    self.warned.add((task.id, a.id, a.updated_at))
                    progress.console.print(f"[yellow]round {r}: task {task.id} (index {i}) has the answer "
                                           f"{a.choice!r}, not one of this run's classes: it waits for another "
                                           "answer[/yellow]", soft_wrap=True)
            else:
                answers[i] = got
            return
        try:
            i, rnd = int(task.data.get("index")), int(task.data.get("round"))
        except (TypeError, ValueError):
            return
        recorded = -1 if request.labelled is None or not 0 <= i < len(request.labelled) else int(request.labelled[i])
        if rnd >= r or recorded < 0 or not self.state.source(i, rnd, task.id):
            return  # not the task a recorded label came from
        got = answer_of(task, self.data.class_names)
        if got is None or got[0] == SKIP:
            return  # a used label is kept when its task is later skipped or emptied
        if got[0] != recorded:
            corrections[i] = int(got[0])
        else:
            corrections.pop(i, None)

    def _since(self, stamp: str | None) -> str | None:
        if stamp is None:
            return None
        return (_stamp(stamp) - timedelta(seconds=MARGIN_S)).astimezone(timezone.utc).strftime(STAMP_FORMAT)

    def _expired(self, r: int) -> bool:
        started = self.state.round(r).imported_at
        return self.wait_limit_s is not None and started is not None and time.time() - started > self.wait_limit_s

    def _finish(self, request: LabelRequest, tasks: dict[int, int], answers: dict, current: dict,
                corrections: dict, seconds: float, requests: int) -> LabelResult:
        r, rt = int(request.round), self.state.round(request.round)
        unanswered = [i for i in tasks if i not in answers]
        if unanswered:  # the wait limit passed
            self._retry("removing unanswered tasks", self.client.delete_tasks, self.pid, [tasks[i] for i in unanswered])
            progress.console.print(f"[yellow]round {r}: oracle.wait_limit_s={self.wait_limit_s:g} s passed; going on "
                                   f"with {len(answers)} answers; {len(unanswered)} unanswered task(s) removed from "
                                   "Label Studio, their samples are back in the pool[/yellow]", soft_wrap=True)
        rt.used = {i: answers[i][0] if i in answers else RETURNED for i in tasks}
        self.state.save()
        idx = [i for i in tasks if i in answers and answers[i][0] != SKIP]
        split = sum(1 for t in current.values() if disagrees(t))
        annotators = {a.annotator for t in current.values() for a in t.annotations}
        notes = []
        if split:
            notes.append(f"annotators disagree on {split} task(s) (the latest answer counts)")
        if corrections:
            notes.append(f"{len(corrections)} label(s) of earlier rounds changed in Label Studio, corrected: "
                         + ", ".join(f"{i} -> {self.data.class_names[y]}" for i, y in sorted(corrections.items())[:10]))
        for n in notes:
            progress.console.print(f"round {r}: {n}", soft_wrap=True)
        return LabelResult(
            idx=np.asarray(idx, dtype=np.int64), labels=np.asarray([answers[i][0] for i in idx], dtype=np.int64),
            seconds=np.asarray([answers[i][1] for i in idx], dtype=float), corrections=dict(corrections),
            info={"skipped": float(sum(1 for a, _ in answers.values() if a == SKIP)),
                  "returned_unanswered": float(len(unanswered)), "annotator_disagreements": float(split),
                  "annotators": float(len(annotators)), "labels_corrected": float(len(corrections)),
                  "label_wait_seconds": seconds, "label_studio_requests": float(requests)})

    # ------------------------------------------------------------------ tasks of a batch, none twice
    def _tasks_for(self, request: LabelRequest) -> dict[int, int]:
        """Index -> task id of the batch: the saved ones, then tasks of this run and round already in
        the project (an import whose reply was lost), then a new import of the rest."""
        r, rt = int(request.round), self.state.round(request.round)
        want = [int(i) for i in request.idx]
        missing = [i for i in want if i not in rt.tasks]
        if missing:
            for t in sorted(self.client.tasks(self.pid, run=self.state.run, round=r), key=lambda t: t.id):
                i = int(t.data.get("index", -1))
                if i in missing and i not in rt.tasks:
                    rt.tasks[i] = t.id
            rest = [i for i in want if i not in rt.tasks]
            if rest:
                ids = self.client.import_tasks(self.pid, self._task_data(request, rest))
                if ids is None:  # imported asynchronously: found by their data
                    ids = {int(t.data["index"]): t.id for t in self.client.tasks(self.pid, run=self.state.run, round=r)}
                    ids = [ids[i] for i in rest]
                rt.tasks.update(zip(rest, ids, strict=True))
            rt.imported_at = rt.imported_at or time.time()
            self.state.save()
        return {i: rt.tasks[i] for i in want}

    def _task_data(self, request: LabelRequest, rest: list[int]) -> list[dict]:
        r, names = int(request.round), self.data.class_names
        pos = {int(i): k for k, i in enumerate(request.idx)}
        images = {i: save_png(self.data.train, i, self.queries / f"round_{r}" / "images" / f"{i}.png") for i in rest}
        urls = {}
        if self.mode == "upload":
            named = {f"{self.state.run}_r{r}_{i}.png": p for i, p in images.items()}
            got = self.client.upload(self.pid, named)
            urls = {i: got[f"{self.state.run}_r{r}_{i}.png"] for i in rest}
        out = []
        for i in rest:
            k = pos[i]
            sugg = None if request.predicted is None else names[int(request.predicted[k])]
            conf = None if request.confidence is None else round(float(request.confidence[k]), 4)
            t = label_studio.task(i, images[i], images[i].relative_to(self.queries / f"round_{r}").as_posix(), r,
                                  sugg, conf)
            if i in urls:
                t["data"]["image"] = urls[i]
            score = None if request.scores is None else round(float(request.scores[k]), 6)
            t["data"].update(run=self.state.run, score=score, rank=k + 1, confidence=conf)
            for p in t.get("predictions", []):
                p["model_version"] = MODEL_VERSION
            out.append(t)
        return out

    # ------------------------------------------------------------------ a server that goes away
    def _retry(self, what: str, fn, *args, **kwargs):
        """``fn(...)``, retried with backoff (1 s doubling to 30 s) while the server does not answer."""
        delay, down_since = 1.0, None
        while True:
            try:
                out = fn(*args, **kwargs)
            except ServerUnavailable as e:
                if down_since is None:
                    down_since = time.monotonic()
                    progress.console.print(f"[yellow]Label Studio at {self.url} is not answering ({e}); retrying every "
                                           f"{delay:g}-{MAX_BACKOFF_S:g} s. Nothing is lost: the batch's task ids are "
                                           f"in {self.state.path}; Ctrl-C stops, loop.resume=true goes "
                                           "on.[/yellow]", soft_wrap=True)
                self.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF_S)
                continue
            if down_since is not None:
                progress.console.print(f"Label Studio answers again after {time.monotonic() - down_since:.0f} s",
                                       soft_wrap=True)
            return out


def config(class_names: list[str]) -> str:
    """alframe's labelling config (:func:`alframe.oracles.label_studio.labelling_config`), with an
    answer required before a submit."""
    xml = label_studio.labelling_config(class_names)
    if "required=" not in xml:
        xml = xml.replace('<Choices name="label"', '<Choices name="label" required="true"', 1)
    return xml


def classes_of(label_config: str) -> list[str]:
    """The choice values of the ``label`` control of a labelling config ([] when there is none)."""
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError:
        return []
    for choices in root.iter("Choices"):
        if choices.get("name") == "label":
            return [c.get("value", "") for c in choices.iter("Choice")]
    return []
