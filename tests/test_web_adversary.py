"""The labelling page against an attacker: a real server on 127.0.0.1, raw HTTP requests as a
hostile web page (forged forms, DNS rebinding, foreign origins), a stale second tab or a broken
client would send them. Each refusal is checked by its status and by the stored answers: the
answers file, the oracle's result and the state's version stay exactly what the legitimate
annotator made them. Only 127.0.0.1 is contacted (the foreign names are Host/Origin headers)."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from alframe.data.digits import digits
from alframe.oracles.base import LabelRequest
from alframe.oracles.web import MAX_BODY, WebOracle

IDX = np.array([4, 10, 17])
JSON = {"Content-Type": "application/json", "X-Requested-With": "alframe"}


@pytest.fixture(scope="module")
def data():
    return digits()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


class Lab:
    """A :class:`WebOracle` serving round ``round`` (batch :data:`IDX`) on 127.0.0.1, the
    legitimate annotator's browser (:meth:`give`) and raw HTTP for the attacks (:meth:`send`).

    ``given`` holds what the annotator answered (index -> label or ``"skip"``), and
    ``expected_version`` the state's version after their last answer.
    """

    def __init__(self, data, run_dir, round: int = 1, idx=IDX):
        self.run_dir = run_dir
        self.oracle = WebOracle(port=0)
        self.oracle.setup(data, run_dir)
        self.port = self.oracle.server.server_port
        self.host = f"127.0.0.1:{self.port}"
        self.origin = f"http://{self.host}"
        self.cookie_name = f"alframe-{self.port}"
        login = self.send("GET", f"/?token={self.oracle.token}", cookie=None)
        assert login.status == 303 and login.headers["location"] == "/"
        self.cookie = f"{self.cookie_name}={self.oracle.token}"
        self.open(round, idx)

    def open(self, round: int, idx, predicted=True) -> None:
        """The loop asks for labels of ``idx`` in round ``round`` (``oracle.label`` in a thread)."""
        self.round, self.given, self.out = round, {}, {}
        k = len(idx)
        req = LabelRequest(round=round, idx=np.asarray(idx), predicted=np.arange(2, 2 + k) % 10 if predicted else None,
                           confidence=np.linspace(0.9, 0.3, k) if predicted else None)
        self.thread = threading.Thread(target=lambda: self.out.setdefault("result", self.oracle.label(req)),
                                       daemon=True)
        self.thread.start()
        for _ in range(250):
            if self.state()["status"] == "labelling":
                break
            self.thread.join(0.02)
        self.expected_version = self.state()["version"]

    # ------------------------------------------------------------------ raw HTTP
    def send(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None,
             host: str | None = "", cookie: str | None = "", chunked: bool = False) -> Reply:
        """One request on a fresh connection to 127.0.0.1:port.

        ``host=""`` sends the right Host, None none; ``cookie=""`` the session cookie, None none;
        ``chunked`` sends ``body`` with ``Transfer-Encoding: chunked`` (no Content-Length).
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if host is not None:
                conn.putheader("Host", host or self.host)
            if cookie is not None:
                conn.putheader("Cookie", cookie or self.cookie)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            data = body.encode() if isinstance(body, str) else body
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
                step = 16 * 1024
                conn.endheaders((data[k:k + step] for k in range(0, len(data), step)), encode_chunked=True)
            else:
                if data is not None:
                    conn.putheader("Content-Length", str(len(data)))
                conn.endheaders(data)
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def state(self) -> dict:
        r = self.send("GET", "/api/state")
        assert r.status == 200, r.body
        return r.json()

    def image_url(self, index: int) -> str:
        return next(it["image"] for it in self.state()["items"] if it["index"] == index)

    # ------------------------------------------------------------------ the annotator
    def give(self, index: int, label, origin: str | None = "") -> None:
        """The annotator's page answers ``label`` (a class number or "skip") for ``index``."""
        path, body = ("/api/skip", {"index": index}) if label == "skip" else ("/api/label", {"index": index, "label": label})
        headers = dict(JSON, **({"Origin": origin or self.origin} if origin is not None else {}))
        r = self.send("POST", path, json.dumps({**body, "version": self.state()["version"]}), headers)
        assert r.status == 200, r.body
        self.given[index] = label if label == "skip" else int(label)
        self.expected_version = r.json()["version"]

    def check(self, what: str = "") -> None:
        """The stored answers are exactly the annotator's: file, oracle result, version, batch open."""
        path = self.run_dir / "answers" / f"round_{self.round}.json"
        on_disk = {a["index"]: a["label"] for a in json.loads(path.read_text())["answers"]} if path.exists() else {}
        assert on_disk == self.given, what
        with self.oracle.session.lock:
            res = self.oracle.session.store.result()
            version = self.oracle.session.version
        labelled = {i: y for i, y in self.given.items() if y != "skip"}
        assert dict(zip(res.idx.tolist(), res.labels.tolist(), strict=True)) == labelled, what
        assert res.info["skipped"] == sum(y == "skip" for y in self.given.values()), what
        assert version == self.expected_version == self.version, what  # not even the version changed
        assert self.thread.is_alive(), what  # the batch was not completed behind the annotator's back

    @property
    def version(self) -> int:
        return self.state()["version"]

    def finish(self, rest: dict[int, object]) -> None:
        """The annotator answers the rest; the oracle's result is exactly what they gave."""
        for i, y in rest.items():
            self.give(i, y)
        self.thread.join(10)
        assert not self.thread.is_alive()
        res = self.out["result"]
        labelled = {i: y for i, y in self.given.items() if y != "skip"}
        assert not res.pending
        assert dict(zip(res.idx.tolist(), res.labels.tolist(), strict=True)) == labelled
        assert res.info["skipped"] == sum(y == "skip" for y in self.given.values())

    def close(self) -> None:
        self.oracle.close()


@pytest.fixture
def lab(data, tmp_path):
    """A served batch where the annotator already labelled 4 as 2 and skipped 10."""
    lab = Lab(data, tmp_path)
    lab.give(4, 2)
    lab.give(10, "skip")
    lab.check("the annotator's answers")
    yield lab
    lab.close()


def refused(lab: Lab, reply: Reply, status: int, text: str, what: str) -> None:
    """``reply`` has ``status`` and a one-line JSON error containing ``text``; nothing changed."""
    assert reply.status == status, (what, reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    assert reply.body.count(b"\n") <= 1 and b"Traceback" not in reply.body, what
    error = reply.json()["error"]
    assert isinstance(error, str) and "\n" not in error and len(error) < 400, what
    assert text in error, (what, error)
    lab.check(what)


# ---------------------------------------------------------------------------- CSRF
def test_forged_cross_site_forms_cannot_undo_or_label(lab):
    v = lab.version  # worst case: the attacker even knows the current version
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    evil = {"Origin": "http://evil.example"}
    cases = [  # (what, path, body, headers, cookie sent by the browser?)
        ("form undo, cookie sent (SameSite ignored)", "/api/undo", f"version={v}", {**form, **evil}, True),
        ("form undo, no cookie (SameSite=Strict)", "/api/undo", f"version={v}", {**form, **evil}, False),
        ("form undo, Origin stripped", "/api/undo", f"version={v}", form, True),
        ("form label", "/api/label", f"index=17&label=1&version={v}", {**form, **evil}, True),
        ("multipart label", "/api/label",
         '--b\r\nContent-Disposition: form-data; name="index"\r\n\r\n4\r\n--b--\r\n',
         {"Content-Type": "multipart/form-data; boundary=b", **evil}, True),
        ("text/plain form carrying JSON", "/api/label", json.dumps({"index": 4, "label": 9, "version": v}),
         {"Content-Type": "text/plain", **evil}, True),
        ("text/plain form carrying JSON, Origin stripped", "/api/undo", json.dumps({"version": v}),
         {"Content-Type": "text/plain"}, True),
        ("JSON fetch from another site (no preflight answer)", "/api/undo", json.dumps({"version": v}),
         {**JSON, **evil}, True),
    ]
    for what, path, body, headers, with_cookie in cases:
        r = lab.send("POST", path, body, headers, cookie="" if with_cookie else None)
        text = "not authorised" if not with_cookie else ("cross-origin" if "Origin" in headers else "X-Requested-With")
        refused(lab, r, 403, text, what)
    # Same-origin but still a form (no custom header / not JSON): refused too.
    r = lab.send("POST", "/api/undo", f"version={v}", {**form, "Origin": lab.origin})
    refused(lab, r, 403, "X-Requested-With", "same-origin form without the custom header")
    r = lab.send("POST", "/api/undo", f"version={v}", {**form, "Origin": lab.origin, "X-Requested-With": "x"})
    refused(lab, r, 415, "application/json", "custom header but a form body")
    r = lab.send("POST", "/api/label", json.dumps({"index": 17, "label": 1, "version": v}),
                 {"Content-Type": "text/plain", "X-Requested-With": "x"})
    refused(lab, r, 415, "application/json", "custom header but text/plain")
    lab.finish({17: 5})


# ---------------------------------------------------------------------------- DNS rebinding
def test_wrong_host_header_is_refused(lab):
    v = lab.version
    write = json.dumps({"index": 17, "label": 1, "version": v})
    for host in (f"evil.example:{lab.port}", f"127.0.0.1:{lab.port + 1 if lab.port < 65535 else 1}",
                 f"localhost.evil.example:{lab.port}", "127.0.0.1", f"127.0.0.1:{lab.port}.evil.example",
                 f"127.0.0.2:{lab.port}"):
        r = lab.send("GET", "/api/state", host=host)
        refused(lab, r, 403, "Host", f"read state via Host {host}")
        assert b"items" not in r.body
        r = lab.send("POST", "/api/label", write, {**JSON, "Origin": f"http://{host}"}, host=host)
        refused(lab, r, 403, "Host", f"write via Host {host}")
        r = lab.send("GET", f"/?token={lab.oracle.token}", host=host, cookie=None)
        refused(lab, r, 403, "Host", f"login via Host {host}")
        assert "set-cookie" not in r.headers
    refused(lab, lab.send("GET", "/api/state", host=None), 403, "Host", "no Host header")
    refused(lab, lab.send("POST", "/api/undo", json.dumps({"version": v}), JSON, host=None), 403, "Host",
            "undo without Host")
    # The names of the machine itself are fine (the page may be opened as localhost or [::1]).
    for host in (f"localhost:{lab.port}", f"[::1]:{lab.port}", f"LOCALHOST:{lab.port}"):
        assert lab.send("GET", "/api/state", host=host).status == 200
    lab.finish({17: 5})


# ---------------------------------------------------------------------------- token
def test_missing_or_wrong_token_is_refused(lab, data, tmp_path_factory):
    v = lab.version
    token = lab.oracle.token
    other = WebOracle(port=0)  # another run's token must not open this one
    other.setup(data, tmp_path_factory.mktemp("other"))
    try:
        reads = [
            ("no cookie", {}, None, "/api/state"),
            ("no cookie, the page", {}, None, "/"),
            ("no cookie, the script", {}, None, "/static/app.js"),
            ("no cookie, an image", {}, None, lab.image_url(17)),
            ("wrong cookie", {}, f"{lab.cookie_name}={token[:-2]}xx", "/api/state"),
            ("empty cookie", {}, f"{lab.cookie_name}=", "/api/state"),
            ("another port's cookie name", {}, f"alframe-{lab.port + 1}={token}", "/api/state"),
            ("another run's token", {}, f"{lab.cookie_name}={other.token}", "/api/state"),
            ("non-ASCII cookie", {}, f"{lab.cookie_name}=t\u00f6k\u00e9n", "/api/state"),
            ("wrong header, right cookie", {"X-Alframe-Token": "nope"}, "", "/api/state"),
            ("another run's header", {"X-Alframe-Token": other.token}, None, "/api/state"),
        ]
        for what, headers, cookie, path in reads:
            r = lab.send("GET", path, headers=headers, cookie=cookie)
            refused(lab, r, 403, "X-Alframe-Token" if "header" in what else "not authorised", what)
        for query in ("token=wrong", "token=", f"token={other.token}", f"token={token}x", "token=%C3%A9",
                      f"token={token[:20]}"):
            r = lab.send("GET", f"/?{query}", cookie=None)
            refused(lab, r, 403, "wrong token", query)
            assert "set-cookie" not in r.headers
        write = json.dumps({"index": 17, "label": 1, "version": v})
        for what, path, cookie in (("write without cookie", "/api/label", None),
                                   ("token in a write's URL instead of the cookie", f"/api/label?token={token}", None),
                                   ("undo with another run's cookie", "/api/undo", f"{lab.cookie_name}={other.token}")):
            body = json.dumps({"version": v}) if "undo" in what else write
            r = lab.send("POST", path, body, {**JSON, "Origin": lab.origin}, cookie=cookie)
            refused(lab, r, 403, "token" if "URL" in what else "not authorised", what)
    finally:
        other.close()
    # The printed URL: cookie HttpOnly + SameSite=Strict for this port, redirect without the token.
    r = lab.send("GET", f"/?token={token}", cookie=None)
    assert r.status == 303 and r.headers["location"] == "/"
    cookie = [p.strip() for p in r.headers["set-cookie"].split(";")]
    assert cookie[0] == f"{lab.cookie_name}={token}" and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/" in cookie and token not in r.body.decode()
    r = lab.send("GET", f"/api/state?a=1&token={token}&b=2", cookie=None)
    assert r.status == 303 and r.headers["location"] == "/api/state?a=1&b=2"
    for path in ("//evil.example/", "/\\evil.example/", "/%5Cevil.example/"):  # no redirect to another host
        r = lab.send("GET", f"{path}?token={token}", cookie=None)
        assert r.status == 303 and r.headers["location"] in ("/", "/evil.example/"), path
    # A script may send the token as a header instead of the cookie.
    assert lab.send("GET", "/api/state", headers={"X-Alframe-Token": token}, cookie=None).status == 200
    lab.finish({17: 5})


def test_token_is_printed_once_and_never_logged(data, tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    lab = Lab(data, tmp_path)
    try:
        lab.give(4, 1)
        lab.send("GET", f"/api/state?token={lab.oracle.token}", cookie=None)
        lab.send("GET", "/api/state", headers={"X-Alframe-Token": lab.oracle.token}, cookie=None)
        lab.finish({10: 2, 17: 3})
    finally:
        lab.close()
    printed = capsys.readouterr().out
    token = lab.oracle.token
    assert printed.count(token) == 1 and f"Labelling page: {lab.oracle.url}" in printed
    assert f"round 1: 3 samples to label at {lab.oracle.base_url}\n" in printed
    requests = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any("GET /?token=<hidden>" in m for m in requests) and len(requests) >= 8
    assert token not in caplog.text and all(token not in m for m in requests)


# ---------------------------------------------------------------------------- Origin
def test_foreign_origin_is_refused(lab):
    v = lab.version
    write = json.dumps({"index": 17, "label": 1, "version": v})
    for origin in ("http://evil.example", f"http://127.0.0.1:{lab.port + 1}", "null", f"https://127.0.0.1:{lab.port}",
                   f"http://localhost.evil.example:{lab.port}", f"http://127.0.0.1:{lab.port}.evil.example",
                   "http://127.0.0.1", f"http://127.0.0.1:{lab.port}/"):
        r = lab.send("POST", "/api/label", write, {**JSON, "Origin": origin})
        refused(lab, r, 403, "cross-origin", f"label from {origin}")
        r = lab.send("POST", "/api/undo", json.dumps({"version": v}), {**JSON, "Origin": origin})
        refused(lab, r, 403, "cross-origin", f"undo from {origin}")
        r = lab.send("POST", "/api/skip", json.dumps({"index": 17, "version": v}),
                     {**JSON, "Origin": origin, "X-Alframe-Token": lab.oracle.token})
        refused(lab, r, 403, "cross-origin", f"skip from {origin} with the token header")
    # The page's own origins (any name of this machine and port) and no Origin with the custom header.
    lab.give(4, 3, origin=f"http://localhost:{lab.port}")
    lab.give(4, 2, origin=f"http://[::1]:{lab.port}")
    lab.give(4, 2, origin=None)
    lab.check("own origins")
    lab.finish({17: 5})


# ---------------------------------------------------------------------------- body size
def test_large_bodies_get_413(lab):
    v = lab.version
    big = json.dumps({"index": 17, "label": 1, "version": v, "pad": "x" * (1 << 20)})
    headers = {**JSON, "Origin": lab.origin}
    refused(lab, lab.send("POST", "/api/label", big, headers), 413, "larger than 64 KB", "1 MB label")
    refused(lab, lab.send("POST", "/api/undo", json.dumps({"version": v, "pad": "y" * (1 << 20)}), headers),
            413, "larger than 64 KB", "1 MB undo")
    refused(lab, lab.send("POST", "/api/skip", big, headers, chunked=True), 413, "larger than 64 KB",
            "1 MB chunked skip (no Content-Length)")

    def sized(n: int) -> str:  # a label write of exactly n bytes
        empty = len(json.dumps({"index": 17, "label": "", "version": v}))
        return json.dumps({"index": 17, "label": "x" * (n - empty), "version": v})

    just_over, exactly = sized(MAX_BODY + 1), sized(MAX_BODY)
    assert (len(just_over), len(exactly)) == (MAX_BODY + 1, MAX_BODY)
    refused(lab, lab.send("POST", "/api/label", just_over, headers), 413, "larger than 64 KB", "64 KB + 1 byte")
    refused(lab, lab.send("POST", "/api/label", just_over, headers, chunked=True), 413, "larger than 64 KB",
            "64 KB + 1 byte, chunked")
    # Up to the limit the body is read and judged on its content.
    refused(lab, lab.send("POST", "/api/label", exactly, headers), 400, "class", "64 KB exactly")
    lab.finish({17: 5})


# ---------------------------------------------------------------------------- malformed values
def test_malformed_values_get_400_with_a_one_line_error(lab):
    v = lab.version
    idx_err, ver_err = "'index' must be a non-negative JSON integer", "'version' must be a non-negative JSON integer"
    label = [  # raw JSON bodies for /api/label
        (f'{{"index": 1e400, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": -1e400, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": NaN, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": Infinity, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": true, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": false, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": "3", "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": "17", "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": 17.0, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": 16.5, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": [17], "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": null, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": -17, "label": 1, "version": {v}}}', idx_err),
        (f'{{"index": 99999999999999999999999999, "label": 1, "version": {v}}}', "unknown sample index"),
        (f'{{"index": 5, "label": 1, "version": {v}}}', "sample 5 is not in the current batch"),
        (f'{{"index": 17, "label": "cat", "version": {v}}}', "unknown class 'cat'"),
        (f'{{"index": 17, "label": 10, "version": {v}}}', "unknown class '10'"),
        (f'{{"index": 17, "label": -1, "version": {v}}}', "class"),
        (f'{{"index": 17, "label": 3.0, "version": {v}}}', "'label' must be a class name or number"),
        (f'{{"index": 17, "label": true, "version": {v}}}', "'label' must be a class name or number"),
        (f'{{"index": 17, "label": null, "version": {v}}}', "'label' must be a class name or number"),
        (f'{{"index": 17, "label": [1], "version": {v}}}', "'label' must be a class name or number"),
        (f'{{"index": 17, "label": "", "version": {v}}}', "class"),
        (f'{{"index": 17, "label": "{"9" * 5000}", "version": {v}}}', "class"),
        (f'{{"index": 17, "version": {v}}}', "missing 'label'"),
        (f'{{"label": 1, "version": {v}}}', "missing 'index'"),
        ('{"index": 17, "label": 1}', "missing 'version'"),
        ('{"index": 17, "label": 1, "version": "0"}', ver_err),
        (f'{{"index": 17, "label": 1, "version": {v}.0}}', ver_err),
        ('{"index": 17, "label": 1, "version": true}', ver_err),
        ('{"index": 17, "label": 1, "version": 1e400}', ver_err),
        (f'{{"index": 17, "label": 1, "version": {v}, "admin": true}}', "unexpected field 'admin'"),
        ('{"index": 1' + "0" * 5000 + ', "label": 1}', "JSON object"),  # too many digits for Python's int
        ("index=17&label=1", "JSON object"),
        ("", "JSON object"),
        ("[17, 1]", "JSON object"),
        ("null", "JSON object"),
        ('"17"', "JSON object"),
        ("[" * 30000 + "]" * 30000, "JSON object"),
        (b'{"index": 17, "label": "\xff\xfe"}', "JSON object"),
        ('{"index": 17, "label": 1, "version": 0', "JSON object"),
    ]
    headers = {**JSON, "Origin": lab.origin}
    for body, text in label:
        refused(lab, lab.send("POST", "/api/label", body, headers), 400, text, f"label {body[:60]!r}")
    for body, text in ((f'{{"index": 1e400, "version": {v}}}', idx_err), (f'{{"index": true, "version": {v}}}', idx_err),
                       (f'{{"index": "17", "version": {v}}}', idx_err), (f'{{"index": 5, "version": {v}}}', "not in the"),
                       (f'{{"index": 17, "label": 1, "version": {v}}}', "unexpected field 'label'")):
        refused(lab, lab.send("POST", "/api/skip", body, headers), 400, text, f"skip {body!r}")
    for body, text in (("{}", "missing 'version'"), ('{"version": 1e400}', ver_err), ('{"version": -1}', ver_err),
                       ('{"version": "x"}', ver_err), ("", "JSON object")):
        refused(lab, lab.send("POST", "/api/undo", body, headers), 400, text, f"undo {body!r}")
    run_id = lab.oracle.session.run_id
    for path, status in ((f"/api/image/{run_id}/1/abc", 400), (f"/api/image/{run_id}/1/1e400", 400),
                         (f"/api/image/{run_id}/1/-4", 400), (f"/api/image/{run_id}/1/5", 404),
                         (f"/api/image/{run_id}/1/{'9' * 30}", 400)):
        refused(lab, lab.send("GET", path), status, "image" if status == 400 else "no such image", path)
    refused(lab, lab.send("GET", "/api/label"), 405, "Method Not Allowed", "GET on a write route")
    refused(lab, lab.send("PUT", "/api/label", f'{{"index": 17, "label": 1, "version": {v}}}', headers), 405,
            "Method Not Allowed", "PUT")
    refused(lab, lab.send("GET", "/api/nothing"), 404, "Not Found", "unknown route")
    lab.finish({17: 5})


# ---------------------------------------------------------------------------- two tabs
def test_two_tabs_second_write_gets_409_with_the_current_state(data, tmp_path):
    lab = Lab(data, tmp_path)
    try:
        v0 = lab.version  # both tabs load this state
        headers = {**JSON, "Origin": lab.origin}
        lab.give(4, 2)  # tab A
        stale = [
            ("tab B labels the same sample", "/api/label", {"index": 4, "label": 7, "version": v0}),
            ("tab B labels the next sample", "/api/label", {"index": 10, "label": 7, "version": v0}),
            ("tab B skips", "/api/skip", {"index": 4, "version": v0}),
            ("tab B undoes", "/api/undo", {"version": v0}),
            ("a version from the future", "/api/label", {"index": 4, "label": 7, "version": v0 + 5}),
        ]
        for what, path, body in stale:
            r = lab.send("POST", path, json.dumps(body), headers)
            refused(lab, r, 409, "out of date", what)
            state = r.json()["state"]
            assert state == lab.state() and state["items"][0]["answer"] == 2 and state["current"] == 10, what
        # Tab B reloads the state it was sent, then its write is accepted.
        r = lab.send("POST", "/api/label", json.dumps({"index": 10, "label": 7, "version": state["version"]}), headers)
        assert r.status == 200 and r.json()["version"] == state["version"] + 1
        lab.given[10], lab.expected_version = 7, r.json()["version"]
        lab.check("tab B after reloading")
        # Undo by tab A, based on the version before tab B's answer: refused, tab B's answer stays.
        r = lab.send("POST", "/api/undo", json.dumps({"version": state["version"]}), headers)
        refused(lab, r, 409, "out of date", "tab A undoes with an old version")
        lab.finish({17: "skip"})
        # The batch is closed: a write now gets 409 with the waiting state.
        r = lab.send("POST", "/api/label", json.dumps({"index": 17, "label": 1, "version": lab.version}), headers)
        assert r.status == 409 and r.json()["state"]["status"] == "waiting" and "no batch" in r.json()["error"]
    finally:
        lab.close()


# ---------------------------------------------------------------------------- headers
def test_every_response_forbids_framing_sniffing_and_caching(lab):
    v = lab.version
    headers = {**JSON, "Origin": lab.origin}
    replies = {
        "page": lab.send("GET", "/"),
        "script": lab.send("GET", "/static/app.js"),
        "state": lab.send("GET", "/api/state"),
        "image": lab.send("GET", lab.image_url(17)),
        "login redirect": lab.send("GET", f"/?token={lab.oracle.token}", cookie=None),
        "403": lab.send("GET", "/", cookie=None),
        "403 host": lab.send("GET", "/", host="evil.example"),
        "404": lab.send("GET", "/nothing"),
        "405": lab.send("GET", "/api/undo"),
        "400": lab.send("POST", "/api/undo", "{}", headers),
        "409": lab.send("POST", "/api/undo", json.dumps({"version": v + 1}), headers),
        "413": lab.send("POST", "/api/undo", "x" * (2 * MAX_BODY), headers),
        "415": lab.send("POST", "/api/undo", "{}", {**headers, "Content-Type": "text/plain"}),
    }
    assert [r.status for r in replies.values()] == [200, 200, 200, 200, 303, 403, 403, 404, 405, 400, 409, 413, 415]
    for what, r in replies.items():
        h = r.headers
        assert h["x-frame-options"] == "DENY", what
        csp = [d.strip() for d in h["content-security-policy"].split(";")]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, what
        assert h["x-content-type-options"] == "nosniff", what
        assert h["cache-control"] == "no-store", what
        assert h["cross-origin-resource-policy"] == "same-origin", what
        assert "access-control-allow-origin" not in h, what
    lab.check("headers")
    lab.finish({17: 5})


# ---------------------------------------------------------------------------- images
def test_image_urls_are_per_run_and_round_and_not_cacheable(data, tmp_path):
    a, b = Lab(data, tmp_path / "a"), Lab(data, tmp_path / "b")
    try:
        url_a, url_b = a.image_url(4), b.image_url(4)
        assert url_a != url_b and url_a.endswith("/1/4") and url_b.endswith("/1/4")
        assert a.image_url(10) != b.image_url(10)
        ra, rb = a.send("GET", url_a), b.send("GET", url_b)
        assert ra.status == rb.status == 200 and ra.body[:4] == b"\x89PNG" and ra.body == rb.body
        for r in (ra, rb):
            assert r.headers["cache-control"] == "no-store" and r.headers["content-type"] == "image/png"
            assert "etag" not in r.headers and "last-modified" not in r.headers and "expires" not in r.headers
        refused(b, b.send("GET", url_a), 404, "no such image", "run A's image URL on run B")
        refused(a, a.send("GET", url_b), 404, "no such image", "run B's image URL on run A")
        # The next round of the same run: the same sample gets a new URL; the old one is gone.
        a.finish({4: 1, 10: 2, 17: 3})
        a.open(2, [4, 33])
        url_round2 = a.image_url(4)
        assert url_round2 != url_a and url_round2.endswith("/2/4")
        assert a.send("GET", url_round2).status == 200
        refused(a, a.send("GET", url_a), 404, "no such image", "round 1's URL in round 2")
        a.finish({4: 0, 33: "skip"})
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------- a whole run
@pytest.mark.slow  # two trainings and an MLflow run: 4-9 s on a loaded 2-core machine (the rest: ~1 s each)
@pytest.mark.usefixtures("store")
def test_a_run_labelled_over_http_stores_no_token(tmp_path):
    """A person labels a whole (tiny) run through the API; the token is in no file the run wrote
    (MLflow store with its params, artifacts, run folder) and every answer reached the pool."""
    from mlflow import MlflowClient

    from alframe.loop.experiment import Experiment
    from alframe.rundir.state import PoolState

    from .conftest import compose
    from .helpers import joined_result, run_in_thread

    y = digits().targets
    cfg = compose(["oracle=web", "oracle.port=0", "trainer.max_epochs=1", "loop.initial_size=4",
                   "loop.query_size=3", "loop.rounds=1", "strategy=margin"], tmp_path)
    exp = Experiment(cfg, tmp_path / "job")
    thread, out, url = run_in_thread(exp)
    token = exp.oracle.token
    assert url == f"{exp.oracle.base_url}?token={token}"
    port = int(url.split(":")[2].split("/")[0])
    cookie = f"alframe-{port}={token}"
    conn_headers = {"Host": f"127.0.0.1:{port}", "Cookie": cookie, **JSON, "Origin": f"http://127.0.0.1:{port}"}

    def call(method: str, path: str, body: dict | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, None if body is None else json.dumps(body), conn_headers)
            r = conn.getresponse()
            data = json.loads(r.read())
            assert r.status == 200, data
            return data
        finally:
            conn.close()

    given: dict[int, int] = {}
    while thread.is_alive() and len(given) < 7:
        s = call("GET", "/api/state")
        if s["status"] != "labelling":
            thread.join(0.1)
            continue
        i = s["current"]
        call("POST", "/api/label", {"index": i, "label": int(y[i]), "version": s["version"]})
        given[i] = int(y[i])
    res = joined_result(thread, out, 120)
    assert res.status == "finished" and len(given) == 7
    state = PoolState.load(res.run_dir)
    assert {int(i): int(state.labels[i]) for i in state.labelled_idx} == given
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and len(files) > 10
    assert [p for p in files if token.encode() in p.read_bytes()] == []
    run = MlflowClient(res.tracking_uri).get_run(res.run_id)
    assert run.data.params and all(token not in str(v) for v in {**run.data.params, **run.data.tags}.values())
