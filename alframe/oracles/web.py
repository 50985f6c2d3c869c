"""A person labels the query batch on a local web page (Flask, bound to localhost only).

Only the person who started the run can drive the page (as with Jupyter): the printed URL's random
token is traded by the first request for an HttpOnly, SameSite=Strict cookie (a redirect drops it
from the URL); a request without that cookie (or an ``X-Alframe-Token`` header), or with a Host
other than ``127.0.0.1``/``localhost``/``[::1]`` and the port (DNS rebinding), gets 403. A change
(not GET/HEAD/OPTIONS) also needs an allowed Origin or none, ``X-Requested-With`` or the token
header (403) and a JSON body (415), which a cross-site form cannot send. Responses forbid framing,
sniffing and caching; image URLs name the run and round. Bodies over 64 KB get 413, malformed values
a one-line JSON 400, a write based on an older ``version`` (another tab wrote first) 409 with the state.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
import webbrowser
from pathlib import Path
from urllib.parse import urlencode

from flask import Flask, jsonify, redirect, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler, make_server

from alframe import progress
from alframe.oracles.answers import SKIP, AnswerStore
from alframe.oracles.base import LabelRequest, LabelResult, Oracle, parse_label
from alframe.oracles.render import png_bytes

STATIC = Path(__file__).resolve().parent / "web_static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 64 * 1024  # bytes; larger request bodies get 413
TOKEN_HEADER = "X-Alframe-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: on every response: no framing (clickjacking), no sniffing, no caching, same-origin only
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin"}
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)
_FIELD_HELP = {"index": "an integer sample index of the current batch", "label": "a class name or number",
               "version": "the 'version' of the state the page shows"}


class BadRequest(Exception):
    """A refused request: ``status`` (4xx), ``message``, and for 409 the current ``state``."""

    def __init__(self, status: int, message: str, state: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.state = status, message, state


def _short(value, n: int = 60) -> str:
    """``repr(value)`` cut to ``n`` characters (error messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."


def same_token(given: str | None, token: str) -> bool:
    """Whether ``given`` is ``token``, compared in constant time; None or empty -> False."""
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "backslashreplace"), token.encode("utf-8"))


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """Host header values (lower case) the page answers: ``127.0.0.1``, ``localhost``, ``[::1]``
    and ``host``, each with ``:port`` (and without it when ``port`` is 80, as browsers send)."""
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    hosts = {f"{n}:{int(port)}" for n in names} | (names if int(port) == 80 else set())
    return frozenset(h.lower() for h in hosts)


class LabelSession:
    """The batch on the page and its answers; shared by the HTTP threads and the loop thread.

    Every change goes through :class:`~alframe.oracles.answers.AnswerStore`, which writes
    ``<run_dir>/answers/round_<r>.json`` atomically before the HTTP reply is sent. Each change of
    what the page shows (batch opened or closed, answer, undo, end) increments :attr:`version`;
    a write names the version it was based on and gets 409 unless it is the current one.
    ``run_id`` (random by default) goes into image URLs.
    """

    def __init__(self, data, run_dir: Path, run_id: str = ""):
        self.data, self.run_dir = data, Path(run_dir)
        self.run_id = run_id or secrets.token_urlsafe(9)
        self.lock, self.done = threading.Lock(), threading.Event()
        self.request: LabelRequest | None = None
        self.store: AnswerStore | None = None
        self.shown_at: float = time.monotonic()
        self.finished = False  # the experiment ended: no more batches will come
        self.version = 0

    # ------------------------------------------------------------------ loop side
    def open(self, req: LabelRequest) -> None:
        """Put a new batch on the page (answers saved earlier for it are loaded)."""
        with self.lock:
            self.request, self.store = req, AnswerStore(self.run_dir, req.round, req.idx)
            self.shown_at = time.monotonic()
            self.version += 1
            self.done.clear()
            if self.store.complete:
                self.done.set()

    def close_batch(self) -> None:
        """Take the batch off the page (the loop is training)."""
        with self.lock:
            self.request, self.store, self.version = None, None, self.version + 1

    def finish(self) -> None:
        """The experiment ended: the page says so."""
        with self.lock:
            self.finished, self.version = True, self.version + 1

    # ------------------------------------------------------------------ page side
    def snapshot(self) -> dict:
        """What the page shows: status, version, round, classes, items (index, image URL,
        suggestion, confidence, answer), the current index, progress, whether undo is possible."""
        with self.lock:
            return self._snapshot()

    def _snapshot(self) -> dict:  # the caller holds the lock
        names = self.data.class_names
        if self.request is None:
            return {"status": "finished" if self.finished else "waiting", "version": self.version, "classes": names}
        req, store = self.request, self.store
        items = []
        for k, i in enumerate(int(j) for j in req.idx):
            ans = store.answers.get(i)
            items.append({"index": i, "image": f"/api/image/{self.run_id}/{req.round}/{i}",
                          "suggested": None if req.predicted is None else int(req.predicted[k]),
                          "confidence": None if req.confidence is None else round(float(req.confidence[k]), 4),
                          "answer": None if ans is None else ans["label"]})
        nxt = store.next_unanswered()
        return {"status": "complete" if nxt is None else "labelling", "version": self.version,
                "round": req.round, "classes": names, "items": items, "current": nxt,
                "progress": {"done": store.n_answered, "total": len(store.idx)},
                "can_undo": bool(store.order)}

    def _int_field(self, name: str, raw) -> int:
        """``raw`` if a non-negative JSON integer (not a float such as 4.0 or 1e400, bool or string)."""
        if type(raw) is not int or raw < 0:
            raise BadRequest(400, f"'{name}' must be a non-negative JSON integer ({_FIELD_HELP[name]}), "
                                  f"got {_short(raw)}")
        if name == "index" and raw >= len(self.data.train):
            raise BadRequest(400, f"unknown sample index {raw}: the data set has indices 0..{len(self.data.train) - 1}")
        return raw

    def _check_current(self, version: int, i: int | None = None) -> None:
        """409 (with the state) without a batch or for a stale ``version``; 400 for ``i`` outside it."""
        if self.request is None:
            raise BadRequest(409, "no batch is waiting for labels right now (the model is training)",
                             self._snapshot())
        if version != self.version:
            raise BadRequest(409, f"the page was out of date (version {version}, now {self.version}: another tab "
                                  "or the run changed the batch); it shows the current state", self._snapshot())
        if i is not None and i not in self.store.idx:
            shown = ", ".join(map(str, self.store.idx[:10])) + (", ..." if len(self.store.idx) > 10 else "")
            raise BadRequest(400, f"sample {i} is not in the current batch (round {self.request.round}, "
                                  f"indices {shown})")

    def answer(self, raw_index, raw_label, raw_version) -> dict:
        """Record a class (name or number) or :data:`SKIP` for a sample of the current batch, from
        the JSON values of ``index`` (int), ``label`` (str, int or "skip") and ``version`` (int).

        Returns the state after the answer (:meth:`snapshot`). Raises :class:`BadRequest`: 400 for a
        malformed value, an index outside the batch, an unknown class; 409 (with the state) when no
        batch waits or the version is stale.
        """
        i, version = self._int_field("index", raw_index), self._int_field("version", raw_version)
        if raw_label == SKIP:
            y = SKIP
        elif isinstance(raw_label, bool) or not isinstance(raw_label, (int, str)):
            raise BadRequest(400, f"'label' must be a class name or number, got {_short(raw_label)}")
        elif isinstance(raw_label, str) and len(raw_label) > 1000 and raw_label not in self.data.class_names:
            raise BadRequest(400, f"unknown class {_short(raw_label)} ({len(raw_label)} characters)")
        else:
            try:
                y = parse_label(raw_label, self.data.class_names)
            except ValueError as e:
                raise BadRequest(400, _short(str(e), 300)) from None
        with self.lock:
            self._check_current(version, i)
            now = time.monotonic()
            self.store.set(i, y, now - self.shown_at)
            self.shown_at, self.version = now, self.version + 1
            if self.store.complete:
                self.done.set()
            return self._snapshot()

    def undo(self, raw_version) -> tuple[int | None, dict]:
        """Remove the most recent answer of the current batch; returns ``(its index or None, state)``.
        Raises :class:`BadRequest`: 400 for a malformed version; 409 without a batch or when stale."""
        version = self._int_field("version", raw_version)
        with self.lock:
            self._check_current(version)
            i = self.store.undo()
            if i is not None:
                self.shown_at, self.version = time.monotonic(), self.version + 1
                self.done.clear()
            return i, self._snapshot()

    def image(self, run_id: str, round: str, index: str) -> bytes:
        """PNG of a sample of the current batch, from the parts of an item's ``image`` URL. Raises
        :class:`BadRequest`: 400 for a non-decimal ``index``; 404 for another run's, round's or batch's."""
        if not re.fullmatch(r"[0-9]{1,18}", index):
            raise BadRequest(400, f"image index must be a decimal sample index, got {_short(index)}")
        i = int(index)
        with self.lock:
            if run_id != self.run_id or self.request is None or round != str(self.request.round) \
                    or i not in self.store.idx:
                raise BadRequest(404, "no such image in the current batch (the URL belongs to another run, "
                                      "round or batch): reload the page")
        return png_bytes(self.data.train, i)


def create_app(session: LabelSession, token: str, port: int, host: str = "127.0.0.1") -> Flask:
    """The Flask app of the labelling page and its JSON API, guarded as the module says.

    Routes: ``GET /`` (page), ``GET /api/state``, ``GET /api/image/<run>/<round>/<index>`` (PNG;
    URLs in the state's items), ``POST /api/label`` ``{"index", "label", "version"}``, ``POST
    /api/skip`` ``{"index", "version"}``, ``POST /api/undo`` ``{"version"}``. Refused requests get a
    4xx JSON ``{"error": msg}`` (409 adds ``"state"``) and change nothing. ``token`` is the printed
    URL's secret, ``port`` the bound port (allowed Hosts, cookie name), ``host`` the configured one.
    """
    app = Flask("alframe.labelling", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    hosts = allowed_hosts(host, port)
    origins = frozenset(f"http://{h}" for h in hosts)
    cookie = f"alframe-{int(port)}"  # cookies ignore ports: one name per port keeps two runs apart

    @app.before_request
    def _guard():
        if request.headers.get("Host", "").lower() not in hosts:
            raise BadRequest(403, f"Host {_short(request.headers.get('Host'))} refused: the labelling page "
                                  f"answers only {', '.join(sorted(hosts))}")
        if "token" in request.args:  # the printed URL: set the cookie, then drop the token from the URL
            if request.method not in ("GET", "HEAD") or not same_token(request.args.get("token"), token):
                raise BadRequest(403, "wrong token: open the URL printed by this run")
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            path = request.path if re.fullmatch(r"/([^/\\][^\\]*)?", request.path) else "/"  # never //host
            resp = redirect(path + ("?" + urlencode(rest) if rest else ""), 303)
            resp.set_cookie(cookie, token, httponly=True, samesite="Strict", path="/")
            return resp
        header = request.headers.get(TOKEN_HEADER)
        if header is not None and not same_token(header, token):
            raise BadRequest(403, f"wrong {TOKEN_HEADER} header")
        if header is None and not same_token(request.cookies.get(cookie), token):
            raise BadRequest(403, "not authorised: open the URL with ?token=... that this run printed (if you "
                                  "followed it from another web page, paste it into the address bar)")
        if request.method in SAFE_METHODS:
            return None
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() not in origins:
            raise BadRequest(403, f"cross-origin request refused (Origin {_short(origin)})")
        if header is None and not request.headers.get("X-Requested-With"):
            raise BadRequest(403, f"a change needs the header X-Requested-With or {TOKEN_HEADER}")
        if request.mimetype != "application/json":
            raise BadRequest(415, f"Content-Type must be application/json, got {_short(request.mimetype)}")
        return None

    @app.after_request
    def _headers(resp):
        resp.headers.update(SECURITY_HEADERS)
        return resp

    @app.errorhandler(BadRequest)
    def _bad(e: BadRequest):
        return jsonify({"error": e.message, **({} if e.state is None else {"state": e.state})}), e.status

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        message = f"the request body is larger than {MAX_BODY // 1024} KB" if e.code == 413 else \
            " ".join(f"{e.name}: {e.description}".split())
        resp = jsonify(error=message)
        resp.status_code = e.code or 500
        resp.headers.extend((k, v) for k, v in e.get_headers() if k.lower() != "content-type")  # Allow (405)
        return resp

    @app.errorhandler(Exception)
    def _crash(e: Exception):  # a bug, not the request's fault: logged, one line to the page
        app.logger.error("labelling request failed: %s %s", request.method, request.path, exc_info=e)
        return jsonify(error=f"internal error ({type(e).__name__}); see the run's log"), 500

    def _body(*fields: str) -> dict:
        data = request.get_data()  # 413 when Content-Length > MAX_CONTENT_LENGTH
        if request.content_length is None and len(data) >= MAX_BODY:
            raise RequestEntityTooLarge()  # chunked: werkzeug stops reading at the limit, silently
        try:
            body = request.get_json(silent=True)  # parses the cached data
        except RecursionError:  # [[[[...]]]]
            body = None
        if not isinstance(body, dict):
            raise BadRequest(400, 'the request body must be a JSON object such as {"index": 12, "label": "3", '
                                  '"version": 5}')
        unknown, missing = sorted(set(body) - set(fields)), [f for f in fields if f not in body]
        if unknown or missing:
            raise BadRequest(400, f"unexpected field {_short(unknown[0])}; expected {', '.join(fields)}" if unknown
                             else f"missing '{missing[0]}' ({_FIELD_HELP[missing[0]]})")
        return body

    @app.get("/", defaults={"name": "index.html"})
    @app.get("/static/<path:name>")
    def _static(name: str):
        return send_from_directory(STATIC, name, max_age=0)

    @app.get("/api/state")
    def _state():
        return jsonify(session.snapshot())

    @app.get("/api/image/<run_id>/<round>/<index>")
    def _image(run_id: str, round: str, index: str):
        return session.image(run_id, round, index), 200, {"Content-Type": "image/png"}

    @app.post("/api/label")
    def _label():
        body = _body("index", "label", "version")
        return jsonify(session.answer(body["index"], body["label"], body["version"]))

    @app.post("/api/skip")
    def _skip():
        body = _body("index", "version")
        return jsonify(session.answer(body["index"], SKIP, body["version"]))

    @app.post("/api/undo")
    def _undo():
        undone, state = session.undo(_body("version")["version"])
        return jsonify({**state, "undone": undone})

    return app


class _RedactingHandler(WSGIRequestHandler):
    """Werkzeug's request handler; its request log shows ``token=<hidden>``, never the token."""

    secret = ""

    def log(self, type: str, message: str, *args) -> None:
        text = _TOKEN_IN_TEXT.sub(r"\1<hidden>", message % args if args else message)
        super().log(type, "%s", text.replace(self.secret, "<hidden>") if self.secret else text)


class WebOracle(Oracle):
    """Serves each query batch on a local labelling page and waits for the person's answers.

    The page shows one sample at a time with the model's suggestion pre-selected (Enter
    accepts), one button per class (keys 0-9 pick classes 0-9, arrows move the selection),
    skip (``s``) and undo (``u``), and progress n of k. Each answer is saved atomically to
    ``<run_dir>/answers/round_<r>.json`` before the server replies, so closing the browser or
    killing the process loses nothing; the resumed run (``loop.resume=true``) shows the same
    batch with the saved answers. While the next model trains the page waits and then shows
    the new batch by itself.

    Only the person with the printed URL (:attr:`url`, ``http://127.0.0.1:PORT/?token=...``;
    printed once, opened by ``open_browser``, logged nowhere else) can use the page (see the module).

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
        self.token: str | None = None  # the secret of the printed URL
        self.url = self.base_url = None  # the page's URL with the token (printed once) and without it

    def setup(self, data, run_dir) -> None:
        super().setup(data, run_dir)
        self.session = LabelSession(data, self.run_dir)
        self.token = secrets.token_urlsafe(32)
        handler = type("RequestHandler", (_RedactingHandler,), {"secret": self.token})
        try:
            # no app yet: the allowed Host values need the bound port (oracle.port=0); set before serving
            self.server = make_server(self.host, self.port, None, threaded=True, request_handler=handler)
        except (OSError, SystemExit) as e:  # werkzeug exits on a taken port
            raise OSError(f"cannot serve the labelling page on {self.host}:{self.port} (the port is in use "
                          "or not allowed); choose another port with oracle.port=<n> (0 = any free port)") from e
        port = self.server.server_port
        self.app = create_app(self.session, self.token, port, self.host)
        self.server.app = self.app
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{port}/"
        self.url = f"{self.base_url}?token={self.token}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="alframe-web-oracle", daemon=True)
        self.thread.start()
        progress.console.print(f"[bold]Labelling page:[/bold] {self.url}  (open it in a browser; "
                               f"answers are saved in {self.run_dir / 'answers'})", soft_wrap=True)
        if self.open_browser:
            webbrowser.open(self.url)

    def label(self, request: LabelRequest) -> LabelResult:
        self.session.open(request)
        progress.console.print(f"round {request.round}: {len(request.idx)} samples to label at {self.base_url}",
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
            self.session.finish()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None
