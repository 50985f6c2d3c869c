"""A person labels the query batch on a local web page (Flask, bound to localhost only)."""

from __future__ import annotations

import threading
import time
import webbrowser
from pathlib import Path

from flask import Flask, jsonify, request, send_from_directory
from werkzeug.serving import make_server

from alframe import progress
from alframe.oracles.answers import SKIP, AnswerStore
from alframe.oracles.base import LabelRequest, LabelResult, Oracle, parse_label
from alframe.oracles.render import png_bytes

STATIC = Path(__file__).resolve().parent / "web_static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class BadRequest(Exception):
    """A request the labelling API refuses; ``status`` is the HTTP code (4xx)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class LabelSession:
    """The batch on the page and its answers; shared by the HTTP threads and the loop thread.

    Every change goes through :class:`~alframe.oracles.answers.AnswerStore`, which writes
    ``<run_dir>/answers/round_<r>.json`` atomically before the HTTP reply is sent.
    """

    def __init__(self, data, run_dir: Path):
        self.data, self.run_dir = data, Path(run_dir)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.request: LabelRequest | None = None
        self.store: AnswerStore | None = None
        self.shown_at: float = time.monotonic()
        self.finished = False  # the experiment ended: no more batches will come

    # ------------------------------------------------------------------ loop side
    def open(self, req: LabelRequest) -> None:
        """Put a new batch on the page (answers saved earlier for it are loaded)."""
        with self.lock:
            self.request, self.store = req, AnswerStore(self.run_dir, req.round, req.idx)
            self.shown_at = time.monotonic()
            self.done.clear()
            if self.store.complete:
                self.done.set()

    def close_batch(self) -> None:
        """Take the batch off the page (the loop is training)."""
        with self.lock:
            self.request = self.store = None

    # ------------------------------------------------------------------ page side
    def snapshot(self) -> dict:
        """What the page shows: status, round, classes, items with suggestions and answers."""
        names = self.data.class_names
        with self.lock:
            if self.request is None:
                return {"status": "finished" if self.finished else "waiting", "classes": names}
            req, store = self.request, self.store
            items = []
            for k, i in enumerate(int(j) for j in req.idx):
                ans = store.answers.get(i)
                items.append({
                    "index": i,
                    "suggested": None if req.predicted is None else int(req.predicted[k]),
                    "confidence": None if req.confidence is None else round(float(req.confidence[k]), 4),
                    "answer": None if ans is None else ans["label"],
                })
            nxt = store.next_unanswered()
            return {"status": "complete" if nxt is None else "labelling", "round": req.round,
                    "classes": names, "items": items, "current": nxt,
                    "progress": {"done": store.n_answered, "total": len(store.idx)},
                    "can_undo": bool(store.order)}

    def _check_index(self, raw) -> int:
        if self.request is None:
            raise BadRequest(409, "no batch is waiting for labels right now (the model is training)")
        if isinstance(raw, bool) or raw is None:
            raise BadRequest(400, f"'index' must be an integer sample index, got {raw!r}")
        try:
            i = int(raw)
        except (TypeError, ValueError):
            raise BadRequest(400, f"'index' must be an integer sample index, got {raw!r}") from None
        if isinstance(raw, float) and raw != i:
            raise BadRequest(400, f"'index' must be an integer sample index, got {raw!r}")
        n = len(self.data.train)
        if not 0 <= i < n:
            raise BadRequest(404, f"unknown sample index {i}: the data set has indices 0..{n - 1}")
        if i not in self.store.idx:
            raise BadRequest(409, f"sample {i} is not in the current batch (round {self.request.round}, "
                                  f"indices {self.store.idx})")
        return i

    def answer(self, raw_index, raw_label) -> int:
        """Record a class (name or number) or :data:`SKIP` for a sample of the current batch.

        Raises:
            BadRequest: no batch, unknown index, sample not in the batch, unknown class.
        """
        with self.lock:
            i = self._check_index(raw_index)
            if raw_label == SKIP:
                y = SKIP
            else:
                if raw_label is None or isinstance(raw_label, bool) or not isinstance(raw_label, (int, str)):
                    raise BadRequest(400, f"'label' must be a class name or number, got {raw_label!r}")
                try:
                    y = parse_label(raw_label, self.data.class_names)
                except ValueError as e:
                    raise BadRequest(400, str(e)) from None
            now = time.monotonic()
            self.store.set(i, y, now - self.shown_at)
            self.shown_at = now
            if self.store.complete:
                self.done.set()
            return i

    def undo(self) -> int | None:
        """Remove the most recent answer of the current batch; returns its index or None."""
        with self.lock:
            if self.request is None:
                raise BadRequest(409, "no batch is waiting for labels right now (the model is training)")
            i = self.store.undo()
            self.shown_at = time.monotonic()
            self.done.clear()
            return i

    def image(self, raw_index) -> bytes:
        """PNG of a sample of the current batch."""
        with self.lock:
            i = self._check_index(raw_index)
        return png_bytes(self.data.train, i)


def create_app(session: LabelSession) -> Flask:
    """The Flask app of the labelling page and its JSON API.

    Routes: ``GET /`` (page), ``GET /api/state``, ``GET /api/image/<index>`` (PNG),
    ``POST /api/label`` ``{"index": i, "label": name-or-number}``, ``POST /api/skip``
    ``{"index": i}``, ``POST /api/undo``. Refused requests get a 4xx JSON ``{"error": msg}``
    and change nothing.
    """
    app = Flask("alframe.labelling", static_folder=None)

    @app.errorhandler(BadRequest)
    def _bad(e: BadRequest):
        return jsonify(error=e.message), e.status

    def _json() -> dict:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest(400, "the request body must be a JSON object such as {\"index\": 12, \"label\": \"3\"}")
        return body

    @app.get("/")
    def _page():
        return send_from_directory(STATIC, "index.html", max_age=0)

    @app.get("/static/<path:name>")
    def _static(name: str):
        return send_from_directory(STATIC, name, max_age=0)

    @app.get("/api/state")
    def _state():
        return jsonify(session.snapshot())

    @app.get("/api/image/<index>")
    def _image(index: str):
        return session.image(index), 200, {"Content-Type": "image/png", "Cache-Control": "max-age=3600"}

    @app.post("/api/label")
    def _label():
        body = _json()
        if "label" not in body:
            raise BadRequest(400, "missing 'label' (a class name or number)")
        session.answer(body.get("index"), body["label"])
        return jsonify(session.snapshot())

    @app.post("/api/skip")
    def _skip():
        session.answer(_json().get("index"), SKIP)
        return jsonify(session.snapshot())

    @app.post("/api/undo")
    def _undo():
        undone = session.undo()
        return jsonify({**session.snapshot(), "undone": undone})

    return app


class WebOracle(Oracle):
    """Serves each query batch on a local labelling page and waits for the person's answers.

    The page shows one sample at a time with the model's suggestion pre-selected (Enter
    accepts), one button per class (keys 0-9 pick classes 0-9, arrows move the selection),
    skip (``s``) and undo (``u``), and progress n of k. Each answer is saved atomically to
    ``<run_dir>/answers/round_<r>.json`` before the server replies, so closing the browser or
    killing the process loses nothing; the resumed run (``loop.resume=true``) shows the same
    batch with the saved answers. While the next model trains the page waits and then shows
    the new batch by itself.

    Args:
        host: interface to bind; only ``127.0.0.1``, ``localhost`` or ``::1``.
        port: TCP port (0 = any free port; the URL is printed either way).
        open_browser: open the page in the default browser at start.
        timeout_s: stop waiting for a batch after this many seconds, returning what was
            answered as pending (the run saves and stops), or None to wait indefinitely.

    Raises:
        ValueError: a non-local ``host``, a port outside [0, 65535], a non-positive timeout.
        OSError: at setup, when the port is taken (the message names it).
    """

    name = "web"
    interactive = True

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False,
                 timeout_s: float | None = None):
        if host not in LOCAL_HOSTS:
            raise ValueError(f"oracle.host={host!r}: the labelling page binds to the local machine only; "
                             f"allowed: {', '.join(LOCAL_HOSTS)}")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"oracle.port={port} must lie in [0, 65535] (0 = any free port)")
        if timeout_s is not None and float(timeout_s) <= 0:
            raise ValueError(f"oracle.timeout_s={timeout_s} must be > 0 or null")
        self.host, self.port, self.open_browser = host, int(port), bool(open_browser)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.server = None
        self.thread: threading.Thread | None = None
        self.url: str | None = None

    def setup(self, data, run_dir) -> None:
        super().setup(data, run_dir)
        self.session = LabelSession(data, self.run_dir)
        self.app = create_app(self.session)
        try:
            self.server = make_server(self.host, self.port, self.app, threaded=True)
        except (OSError, SystemExit) as e:  # werkzeug exits on a taken port
            raise OSError(f"cannot serve the labelling page on {self.host}:{self.port} (the port is in use "
                          "or not allowed); choose another port with oracle.port=<n> (0 = any free port)") from e
        port = self.server.server_port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, name="alframe-web-oracle", daemon=True)
        self.thread.start()
        progress.console.print(f"[bold]Labelling page:[/bold] {self.url}  (open it in a browser; "
                               f"answers are saved in {self.run_dir / 'answers'})", soft_wrap=True)
        if self.open_browser:
            webbrowser.open(self.url)

    def label(self, request: LabelRequest) -> LabelResult:
        self.session.open(request)
        progress.console.print(f"round {request.round}: {len(request.idx)} samples to label at {self.url}",
                               soft_wrap=True)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        try:
            while True:
                if self.session.done.wait(0.2):
                    with self.session.lock:  # an undo may have reopened the batch meanwhile
                        if self.session.store.complete:
                            return self.session.store.result(pending=False)
                if deadline is not None and time.monotonic() > deadline:
                    with self.session.lock:
                        result = self.session.store.result(pending=True)
                    progress.console.print(f"[yellow]oracle.timeout_s={self.timeout_s:g} s passed; "
                                           f"{len(result.idx)} labels saved, the rest is pending[/yellow]")
                    return result
        except KeyboardInterrupt:  # Ctrl-C: save and stop like a deliberate quit
            with self.session.lock:
                result = self.session.store.result(pending=True)
            progress.console.print(f"\n[yellow]Interrupted: {len(result.idx)} labels of this batch saved; "
                                   "run again with loop.resume=true to continue.[/yellow]")
            return result
        finally:
            self.session.close_batch()

    def close(self) -> None:
        if getattr(self, "session", None) is not None:
            self.session.finished = True
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None
