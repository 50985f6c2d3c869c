"""The web oracle's HTTP API: answers saved at once, bad requests refused with 4xx and a
message, nothing stored for them; restart continues; binds to localhost only. The page is
driven as the person's browser does: the printed token URL first (it sets the cookie), then
JSON writes with ``X-Requested-With`` and the state's version (attacks: test_web_adversary.py)."""

from __future__ import annotations

import http.cookiejar
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from alframe.data.digits import digits
from alframe.oracles.base import LabelRequest
from alframe.oracles.web import WebOracle

IDX = np.array([4, 10, 17])


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture
def oracle(data, tmp_path):
    o = WebOracle(port=0)
    o.setup(data, tmp_path)
    yield o
    o.close()


class Page:
    """The labelling page as the person's browser uses it (Flask test client, no socket).

    Opening the printed URL (``oracle.url``) trades the token for the session cookie; then
    every request goes to ``oracle.base_url`` with the cookie, and writes send JSON, the
    ``X-Requested-With`` header and (unless given) the version of the current state.
    """

    def __init__(self, oracle):
        self.client, self.base = oracle.app.test_client(), oracle.base_url
        r = self.client.get(oracle.url)
        assert r.status_code == 303 and r.headers["Location"] == "/", r.data

    def get(self, path: str):
        return self.client.get(self.base + path.lstrip("/"))

    def state(self) -> dict:
        return self.get("/api/state").get_json()

    def image_url(self, index: int) -> str:
        return next(it["image"] for it in self.state()["items"] if it["index"] == index)

    def post(self, path: str, json: dict | None = None, **raw):
        """POST ``json`` (plus the current version unless it names one), or ``raw`` (``data=...,
        content_type=...``) as it is."""
        if not raw:
            json = {} if json is None else json
            raw = {"json": json if "version" in json else {**json, "version": self.state()["version"]}}
        return self.client.post(self.base + path.lstrip("/"), headers={"X-Requested-With": "alframe"}, **raw)


def answers_on_disk(tmp_path, round=1):
    path = tmp_path / "answers" / f"round_{round}.json"
    return {a["index"]: a["label"] for a in json.loads(path.read_text())["answers"]} if path.exists() else {}


def start(oracle, round=1):
    """Run oracle.label in a thread (as the loop does); returns (thread, result holder)."""
    out = {}
    req = LabelRequest(round=round, idx=IDX, predicted=np.array([2, 3, 4]), confidence=np.array([0.9, 0.6, 0.3]))
    t = threading.Thread(target=lambda: out.setdefault("result", oracle.label(req)), daemon=True)
    t.start()
    for _ in range(100):
        if oracle.session.request is not None:
            break
        t.join(0.02)
    return t, out


def test_label_skip_undo_and_result(oracle, tmp_path):
    client = Page(oracle)
    assert client.state()["status"] == "waiting"
    t, out = start(oracle)
    s = client.state()
    assert s["status"] == "labelling" and s["round"] == 1 and s["current"] == 4
    assert s["progress"] == {"done": 0, "total": 3}
    assert [it["suggested"] for it in s["items"]] == [2, 3, 4]
    assert s["items"][0]["confidence"] == pytest.approx(0.9)
    png = client.get(s["items"][0]["image"])
    assert png.status_code == 200 and png.data[:4] == b"\x89PNG"
    assert png.headers["Cache-Control"] == "no-store"

    r = client.post("/api/label", json={"index": 4, "label": "2"})
    assert r.status_code == 200 and r.get_json()["current"] == 10
    assert answers_on_disk(tmp_path) == {4: 2}  # saved before the reply
    assert client.post("/api/skip", json={"index": 10}).get_json()["progress"]["done"] == 2
    u = client.post("/api/undo").get_json()
    assert u["undone"] == 10 and u["current"] == 10 and answers_on_disk(tmp_path) == {4: 2}
    client.post("/api/label", json={"index": 10, "label": 7})
    client.post("/api/skip", json={"index": 17})
    t.join(5)
    assert not t.is_alive()
    res = out["result"]
    assert not res.pending and res.idx.tolist() == [4, 10] and res.labels.tolist() == [2, 7]
    assert res.info["skipped"] == 1.0 and len(res.seconds) == 2
    assert client.state()["status"] == "waiting"  # training next round


def test_bad_requests_are_refused_and_store_nothing(oracle, tmp_path, data):
    client = Page(oracle)
    # No batch yet: 409 with the current state.
    r = client.post("/api/label", json={"index": 4, "label": "1"})
    assert r.status_code == 409 and "no batch" in r.get_json()["error"]
    assert r.get_json()["state"]["status"] == "waiting"
    t, out = start(oracle)
    cases = [
        ({"index": 999999, "label": "1"}, "unknown sample index 999999"),
        ({"index": -1, "label": "1"}, "'index' must be a non-negative JSON integer"),
        ({"index": "abc", "label": "1"}, "'index' must be a non-negative JSON integer"),
        ({"index": "4", "label": "1"}, "'index' must be a non-negative JSON integer"),
        ({"index": 2.5, "label": "1"}, "'index' must be a non-negative JSON integer"),
        ({"index": 4.0, "label": "1"}, "'index' must be a non-negative JSON integer"),
        ({"label": "1"}, "missing 'index'"),
        ({"index": 5, "label": "1"}, "sample 5 is not in the current batch"),
        ({"index": 4, "label": "cat"}, "unknown class 'cat'"),
        ({"index": 4, "label": 10}, "unknown class '10'"),
        ({"index": 4, "label": None}, "'label' must be a class name or number"),
        ({"index": 4}, "missing 'label'"),
        ({"index": 4, "label": "1", "version": "0"}, "'version' must be a non-negative JSON integer"),
        ({"index": 4, "label": "1", "note": 1}, "unexpected field 'note'"),
    ]
    for body, text in cases:
        r = client.post("/api/label", json=body)
        assert r.status_code == 400, body
        assert text in r.get_json()["error"], (body, r.get_json())
    r = client.post("/api/label", data="not json", content_type="application/json")
    assert r.status_code == 400 and "JSON object" in r.get_json()["error"]
    r = client.post("/api/label", data="not json", content_type="text/plain")
    assert r.status_code == 415 and "application/json" in r.get_json()["error"]
    r = client.post("/api/skip", json={"index": 5})
    assert r.status_code == 400
    run_id = oracle.session.run_id
    assert client.get(f"/api/image/{run_id}/1/5").status_code == 404  # not in the batch
    assert client.get(f"/api/image/{run_id}/1/99999").status_code == 404
    assert client.get(f"/api/image/{run_id}/0/4").status_code == 404  # another round
    assert client.get(f"/api/image/{run_id}/1/abc").status_code == 400
    assert client.get(f"/api/image/{run_id}/1/4").status_code == 200
    assert answers_on_disk(tmp_path) == {}
    assert client.state()["progress"]["done"] == 0
    for i, y in zip(IDX, (1, 1, 1), strict=True):
        assert client.post("/api/label", json={"index": int(i), "label": y}).status_code == 200
    t.join(5)
    assert out["result"].labels.tolist() == [1, 1, 1]


def test_restart_continues_where_the_person_stopped(data, tmp_path):
    first = WebOracle(port=0)
    first.setup(data, tmp_path)
    t, _ = start(first)
    assert Page(first).post("/api/label", json={"index": 4, "label": 6}).status_code == 200
    first.close()  # the process stops; label() keeps waiting in its daemon thread
    second = WebOracle(port=0)
    second.setup(data, tmp_path)
    try:
        t2, out = start(second)
        c = Page(second)
        s = c.state()
        assert s["current"] == 10 and s["progress"]["done"] == 1 and s["items"][0]["answer"] == 6
        c.post("/api/label", json={"index": 10, "label": 0})
        c.post("/api/label", json={"index": 17, "label": "9"})
        t2.join(5)
        assert dict(zip(out["result"].idx.tolist(), out["result"].labels.tolist(), strict=True)) == {4: 6, 10: 0, 17: 9}
    finally:
        second.close()


def test_real_socket_on_localhost_and_timeout(data, tmp_path):
    o = WebOracle(port=0, timeout_s=0.5)
    o.setup(data, tmp_path)
    try:
        assert o.url == f"{o.base_url}?token={o.token}" and len(o.token) >= 40
        assert o.base_url == f"http://127.0.0.1:{o.server.server_port}/"
        assert o.server.server_address[0] == "127.0.0.1"
        with pytest.raises(urllib.error.HTTPError) as e:  # no cookie yet
            urllib.request.urlopen(o.base_url, timeout=5)
        assert e.value.code == 403
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with browser.open(o.url, timeout=5) as r:  # 303 to / with the cookie set
            assert r.url == o.base_url
            page = r.read().decode()
        assert "alframe labelling" in page and "/static/app.js" in page
        js = browser.open(o.base_url + "static/app.js", timeout=5).read().decode()
        assert "/api/label" in js and "X-Requested-With" in js and "version" in js
        req = urllib.request.Request(o.base_url + "api/label", data=b'{"index": 1, "label": "1", "version": 0}',
                                     headers={"Content-Type": "application/json", "X-Requested-With": "alframe"},
                                     method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            browser.open(req, timeout=5)
        assert e.value.code == 409
        res = o.label(LabelRequest(round=0, idx=IDX))  # nobody answers: pending after 0.5 s
        assert res.pending and len(res.idx) == 0
    finally:
        o.close()


def test_only_local_hosts_and_valid_ports(data, tmp_path):
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(ValueError, match="local machine only"):
            WebOracle(host=host)
    with pytest.raises(ValueError, match="oracle.port=70000"):
        WebOracle(port=70000)
    a = WebOracle(port=0)
    a.setup(data, tmp_path)
    try:
        with pytest.raises(OSError, match=f"cannot serve the labelling page on 127.0.0.1:{a.server.server_port}.*oracle.port=<n>"):
            WebOracle(port=a.server.server_port).setup(data, tmp_path)
    finally:
        a.close()


def test_resume_may_use_another_port(tmp_path):
    """A person may restart the labelling page on another port (the old one may be taken)."""
    from alframe.config.fingerprint import config_fingerprint

    from .conftest import compose
    a = compose(["oracle=web", "oracle.port=8765"], tmp_path)
    b = compose(["oracle=web", "oracle.port=9000", "oracle.timeout_s=60", "oracle.open_browser=true"], tmp_path)
    c = compose(["oracle=web", "oracle.port=8765", "loop.query_size=5"], tmp_path)
    assert config_fingerprint(a) == config_fingerprint(b) != config_fingerprint(c)
