"""A small client for a running Label Studio, on top of its SDK (``label-studio-sdk``, the
``label-studio`` extra): only the calls the live oracle makes, with errors turned into two kinds
(:class:`ServerUnavailable`, retried by the oracle; :class:`LabelStudioError`, reported) whose
messages never carry the API key, a cookie or a response header.

Checked against Label Studio 1.23.2 with label-studio-sdk 2.1.2:

- ``GET /api/tasks`` takes a Data Manager query: ``filters`` on ``tasks:updated_at`` (format
  ``%Y-%m-%dT%H:%M:%S.%fZ``, UTC) and on task data (``tasks:data.run``), ``selectedItems`` with
  the task ids; with ``fields=all`` each task carries all its annotations (``completed_by``,
  ``updated_at``, ``was_cancelled``, ``lead_time``, ``result``). Saving an annotation (a submit,
  an update, a Skip) sets the task's ``updated_at``; a draft does not.
- A Local Files storage is refused unless the server runs with
  ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and its path lies below
  ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``; the storage's validation says which.
- Files posted to ``/api/projects/<id>/import?commit_to_project=false`` are stored without
  creating tasks and are served at ``/data/upload/<project>/<uuid>-<name>``.
- Personal access tokens are JWT refresh tokens the SDK exchanges for access tokens; legacy
  tokens are sent as ``Token <key>``. The SDK tells them apart by their form.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

#: the environment variable the API key is read from (the only place it may come from)
API_KEY_ENV = "LABEL_STUDIO_API_KEY"
#: ``updated_at`` filter format of Label Studio's Data Manager
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
PAGE = 500  # tasks per page of a read


class LabelStudioError(RuntimeError):
    """Label Studio refused a request (bad key, unknown project, invalid data): not retried."""


class ServerUnavailable(ConnectionError):
    """Label Studio did not answer (connection refused, timeout, HTTP 5xx): retried."""


@dataclass
class Annotation:
    """One submitted annotation of a task."""

    id: int
    annotator: int | None
    updated_at: str  # ISO-8601 UTC; stamps of one server sort as text
    cancelled: bool  # the Skip button
    choice: str | None  # the first choice of the ``label`` control, None when there is none
    lead_time: float = 0.0  # seconds the annotator spent (Label Studio measures it)


@dataclass
class Task:
    """One task with its data and all its submitted annotations."""

    id: int
    data: dict
    updated_at: str
    annotations: list[Annotation] = field(default_factory=list)


def _annotation(a: dict) -> Annotation:
    choice = None
    for res in a.get("result") or []:
        choices = (res.get("value") or {}).get("choices") if isinstance(res, dict) else None
        if choices:
            choice = str(choices[0])
            break
    by = a.get("completed_by")
    if isinstance(by, dict):
        by = by.get("id")
    stamp = str(a.get("updated_at") or a.get("created_at") or "")
    return Annotation(id=int(a["id"]), annotator=None if by is None else int(by), updated_at=_iso(stamp),
                      cancelled=bool(a.get("was_cancelled")), choice=choice, lead_time=float(a.get("lead_time") or 0.0))


def _iso(stamp: str) -> str:
    """``2026-12-06 11:21:22.131075+00:00`` and ``2026-12-06T11:21:22.131075Z`` as the latter."""
    s = stamp.replace(" ", "T")
    if s.endswith("+00:00"):
        s = s[:-6] + "Z"
    return s


def _detail(e: Exception) -> str:
    """What Label Studio said about a refused request: its ``detail`` and validation errors only."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        parts = [str(body.get("detail") or "")]
        errors = body.get("validation_errors")
        if errors:
            parts.append(json.dumps(errors)[:600])
        return " ".join(p for p in parts if p) or "no detail"
    return str(body)[:300] if body is not None else type(e).__name__


class LabelStudioClient:
    """The calls the live oracle makes to one Label Studio server.

    Args:
        url: the server, e.g. ``http://localhost:8080``.
        api_key: a personal access token or a legacy token (read from :data:`API_KEY_ENV` by
            the caller; never logged).
        timeout: seconds per request.

    Raises:
        LabelStudioError: the SDK is not installed, or the key is an expired token.
    """

    def __init__(self, url: str, api_key: str, timeout: float = 30.0):
        try:
            from label_studio_sdk import LabelStudio
            from label_studio_sdk.core.api_error import ApiError
        except ImportError:
            raise LabelStudioError("oracle=label_studio needs the Label Studio SDK: pip install "
                                   "'alframe[label-studio]' (or pip install 'label-studio-sdk>=2.1,<2.2')") from None
        self.url, self._ApiError, self.requests = url.rstrip("/"), ApiError, 0
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll in the run's log
        try:  # max_retries=0: the oracle retries itself, with its own backoff and message
            self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout, max_retries=0)
        except ApiError as e:  # an expired personal access token is refused here
            raise LabelStudioError(f"the API key in {API_KEY_ENV} was refused: {_detail(e)}") from None

    def _call(self, what: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` with the SDK's errors turned into this module's two kinds."""
        import httpx

        self.requests += 1
        try:
            return fn(*args, **kwargs)
        except httpx.TransportError as e:  # refused, reset, timed out
            raise ServerUnavailable(f"{what}: {type(e).__name__}") from None
        except self._ApiError as e:
            code = int(getattr(e, "status_code", 0) or 0)
            if code >= 500 or code in (0, 408, 429):
                raise ServerUnavailable(f"{what}: HTTP {code}") from None
            if code in (401, 403):
                raise LabelStudioError(f"{what}: Label Studio refused the API key in {API_KEY_ENV} (HTTP {code}: "
                                       f"{_detail(e)}); use a personal access token or a legacy token of a user "
                                       "of this server") from None
            raise LabelStudioError(f"{what}: HTTP {code}: {_detail(e)}") from None

    # ------------------------------------------------------------------ server and project
    def version(self) -> str:
        """The server's Label Studio version (checks the key too)."""
        self._call("checking the API key", self.sdk.users.whoami)
        v = self._call("reading the server version", self.sdk.versions.get)
        pkg = getattr(v, "label_studio_os_package", None) or {}
        return str((pkg.get("version") if isinstance(pkg, dict) else None) or getattr(v, "release", None) or "?")

    def find_project(self, title: str) -> int | None:
        """The id of the project titled exactly ``title`` (the lowest id when several), or None."""
        found = self._call("listing projects", lambda: [p for p in self.sdk.projects.list(title=title, page_size=100)])
        ids = sorted(int(p.id) for p in found if getattr(p, "title", None) == title)
        return ids[0] if ids else None

    def project(self, pid: int) -> dict:
        """``{"id", "title", "label_config", "model_version"}`` of project ``pid``."""
        p = self._call(f"reading project {pid}", self.sdk.projects.get, id=pid)
        return {"id": int(p.id), "title": p.title, "label_config": p.label_config or "",
                "model_version": getattr(p, "model_version", None) or ""}

    def create_project(self, title: str, label_config: str, model_version: str) -> int:
        p = self._call(f"creating project {title!r}", self.sdk.projects.create, title=title,
                       label_config=label_config, model_version=model_version,
                       description="Created by alframe (oracle=label_studio): active-learning query batches")
        return int(p.id)

    def set_model_version(self, pid: int, model_version: str) -> None:
        """Pre-label tasks with the predictions of ``model_version`` (the one alframe writes)."""
        self._call(f"updating project {pid}", self.sdk.projects.update, id=pid, model_version=model_version,
                   show_collab_predictions=True)

    def ensure_view(self, pid: int, title: str, data: dict) -> None:
        """A Data Manager tab ``title`` with ``data`` (filters, ordering) unless one exists."""
        views = self._call("listing views", self.sdk.views.list, project=pid)
        if not any((getattr(v, "data", None) or {}).get("title") == title for v in views):
            self._call("creating a view", self.sdk.views.create, project=pid, data={"title": title, **data})

    # ------------------------------------------------------------------ images
    def local_storage(self, pid: int, path: Path) -> int | None:
        """The id of the project's Local Files storage on ``path``, or None."""
        found = self._call("listing storages", self.sdk.import_storage.local.list, project=pid)
        return next((int(s.id) for s in found if str(getattr(s, "path", "")).rstrip("/") == str(path)), None)

    def add_local_storage(self, pid: int, path: Path) -> int:
        """A Local Files source storage on ``path`` (validated first).

        Raises:
            LabelStudioError: the server refuses it; the message names the setting it lacks.
        """
        try:
            self._call("checking Local Files", self.sdk.import_storage.local.validate, project=pid, path=str(path),
                       use_blob_urls=False)
        except LabelStudioError as e:
            text = str(e)
            if "LOCAL_FILES_SERVING_ENABLED" in text:
                missing = "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true"
            elif "LOCAL_FILES_DOCUMENT_ROOT" in text:
                missing = (f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<a folder above {path}> (and "
                           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true)")
            else:
                raise
            raise LabelStudioError(f"Label Studio at {self.url} does not serve local files from {path}: start it "
                                   f"with {missing}") from None
        s = self._call("adding a Local Files storage", self.sdk.import_storage.local.create, project=pid,
                       path=str(path), title="alframe queries", use_blob_urls=False,
                       description="Images of alframe's query batches (tasks are imported by alframe; do not sync)")
        return int(s.id)

    def upload(self, pid: int, files: dict[str, Path]) -> dict[str, str]:
        """Upload images (``{unique name: PNG file}``) without creating tasks; returns name -> the
        URL to put in task data."""
        parts = {f"file{k}": (name, Path(f).read_bytes(), "image/png") for k, (name, f) in enumerate(files.items())}
        http = self.sdk._client_wrapper.httpx_client  # the SDK's authenticated client; its import is JSON only

        def post():
            r = http.request(f"api/projects/{pid}/import", method="POST", params={"commit_to_project": "false"},
                             files=parts)
            if r.status_code >= 400:
                raise self._ApiError(status_code=r.status_code, body=_json(r))
            ids = r.json().get("file_upload_ids") or []
            r = http.request(f"api/projects/{pid}/file-uploads", method="GET", params={"ids": json.dumps(ids)})
            if r.status_code >= 400:
                raise self._ApiError(status_code=r.status_code, body=_json(r))
            return r.json()

        listed = self._call(f"uploading {len(files)} images", post)
        out = {}
        for name in files:  # Label Studio stores <uuid>-<name>
            match = next((u["file"] for u in listed if str(u.get("file", "")).endswith("-" + name)), None)
            if match is None:
                raise LabelStudioError(f"uploading images: Label Studio did not store {name}")
            out[name] = "/data/" + str(match).lstrip("/")
        return out

    # ------------------------------------------------------------------ tasks
    def import_tasks(self, pid: int, tasks: list[dict]) -> list[int] | None:
        """Import ``tasks`` (data + predictions); their ids in order, or None when the server
        imports asynchronously (find them by their data then)."""
        r = self._call(f"importing {len(tasks)} tasks", self.sdk.projects.import_tasks, id=pid, request=tasks,
                       return_task_ids=True)
        ids = getattr(r, "task_ids", None)
        return [int(i) for i in ids] if ids and len(ids) == len(tasks) else None

    def tasks(self, pid: int, *, ids: list[int] | None = None, run: str | None = None, round: int | None = None,
              since: str | None = None) -> list[Task]:
        """Tasks of project ``pid`` with all annotations, narrowed by task ids, by alframe's run
        and round (task data) and by ``updated_at`` after ``since`` (:data:`STAMP_FORMAT`)."""
        items = []
        if run is not None:
            items.append({"filter": "filter:tasks:data.run", "operator": "equal", "type": "String", "value": run})
        if round is not None:
            items.append({"filter": "filter:tasks:data.round", "operator": "equal", "type": "Number", "value": round})
        if since is not None:
            items.append({"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
                          "value": since})
        query: dict = {"filters": {"conjunction": "and", "items": items}}
        if ids is not None:
            if not ids:
                return []
            query["selectedItems"] = {"all": False, "included": [int(i) for i in ids]}

        def fetch():  # page by page; a page shorter than PAGE is the last (one request per poll)
            out, page = [], 1
            while True:
                try:
                    items = list(self.sdk.tasks.list(project=pid, fields="all", page=page, page_size=PAGE,
                                                     query=json.dumps(query)).items or [])
                except self._ApiError as e:
                    if page > 1 and getattr(e, "status_code", None) == 404:  # the last page was full
                        return out
                    raise
                out += [Task(id=int(t.id), data=dict(t.data or {}), updated_at=_iso(str(t.updated_at or "")),
                             annotations=[_annotation(a if isinstance(a, dict) else a.dict())
                                          for a in (t.annotations or [])]) for t in items]
                if len(items) < PAGE:
                    return out
                page += 1

        return self._call("reading tasks", fetch)

    def delete_tasks(self, pid: int, ids: list[int]) -> None:
        if ids:
            self._call(f"deleting {len(ids)} tasks", self.sdk.actions.create, id="delete_tasks", project=pid,
                       selected_items={"all": False, "included": [int(i) for i in ids]})


def _json(r) -> object:
    try:
        return r.json()
    except ValueError:
        return r.text[:300]
