"""The web oracle's HTTP API: answers saved at once, bad requests refused with 4xx and a
message, nothing stored for them; restart continues; binds to localhost only."""

from __future__ import annotations

import json
import threading
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
    client = oracle.app.test_client()
    assert client.get("/api/state").get_json()["status"] == "waiting"
    t, out = start(oracle)
    s = client.get("/api/state").get_json()
    assert s["status"] == "labelling" and s["round"] == 1 and s["current"] == 4
    assert s["progress"] == {"done": 0, "total": 3}
    assert [it["suggested"] for it in s["items"]] == [2, 3, 4]
    assert s["items"][0]["confidence"] == pytest.approx(0.9)
    png = client.get("/api/image/4")
    assert png.status_code == 200 and png.data[:4] == b"\x89PNG"

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
    assert client.get("/api/state").get_json()["status"] == "waiting"  # training next round


def test_bad_requests_are_refused_and_store_nothing(oracle, tmp_path, data):
    client = oracle.app.test_client()
    # No batch yet.
    r = client.post("/api/label", json={"index": 4, "label": "1"})
    assert r.status_code == 409 and "no batch" in r.get_json()["error"]
    t, out = start(oracle)
    cases = [
        ({"index": 999999, "label": "1"}, 404, "unknown sample index 999999"),
        ({"index": -1, "label": "1"}, 404, "unknown sample index -1"),
        ({"index": "abc", "label": "1"}, 400, "'index' must be an integer"),
        ({"index": 2.5, "label": "1"}, 400, "'index' must be an integer"),
        ({"label": "1"}, 400, "'index' must be an integer"),
        ({"index": 5, "label": "1"}, 409, "sample 5 is not in the current batch"),
        ({"index": 4, "label": "cat"}, 400, "unknown class 'cat'"),
        ({"index": 4, "label": 10}, 400, "unknown class '10'"),
        ({"index": 4, "label": None}, 400, "'label' must be a class name or number"),
        ({"index": 4}, 400, "missing 'label'"),
    ]
    for body, status, text in cases:
        r = client.post("/api/label", json=body)
        assert r.status_code == status, body
        assert text in r.get_json()["error"], (body, r.get_json())
    r = client.post("/api/label", data="not json", content_type="text/plain")
    assert r.status_code == 400 and "JSON object" in r.get_json()["error"]
    r = client.post("/api/skip", json={"index": 5})
    assert r.status_code == 409
    assert client.get("/api/image/5").status_code == 409
    assert client.get("/api/image/99999").status_code == 404
    assert answers_on_disk(tmp_path) == {}
    assert client.get("/api/state").get_json()["progress"]["done"] == 0
    for i, y in zip(IDX, (1, 1, 1), strict=True):
        assert client.post("/api/label", json={"index": int(i), "label": y}).status_code == 200
    t.join(5)
    assert out["result"].labels.tolist() == [1, 1, 1]


def test_restart_continues_where_the_person_stopped(data, tmp_path):
    first = WebOracle(port=0)
    first.setup(data, tmp_path)
    t, _ = start(first)
    first.app.test_client().post("/api/label", json={"index": 4, "label": 6})
    first.close()  # the process stops; label() keeps waiting in its daemon thread
    second = WebOracle(port=0)
    second.setup(data, tmp_path)
    try:
        t2, out = start(second)
        s = second.app.test_client().get("/api/state").get_json()
        assert s["current"] == 10 and s["progress"]["done"] == 1 and s["items"][0]["answer"] == 6
        c = second.app.test_client()
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
        assert o.url.startswith("http://127.0.0.1:")
        assert o.server.server_address[0] == "127.0.0.1"
        page = urllib.request.urlopen(o.url, timeout=5).read().decode()
        assert "alframe labelling" in page and "/static/app.js" in page
        js = urllib.request.urlopen(o.url + "static/app.js", timeout=5).read().decode()
        assert "/api/label" in js
        req = urllib.request.Request(o.url + "api/label", data=b'{"index": 1, "label": "x"}',
                                     headers={"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
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
