"""End to end in a real headless Chromium: a person labels two rounds of the digits experiment
on the web page, by clicking and by keyboard, reloads midway, skips and undoes; every label
reaches the pool state and the run finishes. A second test has a hostile page on another site
(``http://localhost:<other port>``) post forms and fetches and frame the page, and a second tab
answer first: nothing but the person's answers is stored.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package (dev extra). Playwright's own browser download is never used.

The page's Content-Security-Policy forbids eval, which ``page.wait_for_function`` polls with:
waits here are selector-based (``wait_for_selector``, ``locator(..., has_text=...).wait_for``).
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); the browser test needs it",
                allow_module_level=True)
# The playwright Python package comes with the dev extra (pip install -e '.[dev]'); its absence is
# an installation error, not a reason to skip.
from playwright import sync_api  # noqa: E402

from alframe.data.digits import digits  # noqa: E402
from alframe.loop.experiment import Experiment  # noqa: E402
from alframe.oracles.base import LabelRequest  # noqa: E402
from alframe.oracles.web import WebOracle  # noqa: E402
from alframe.rundir.state import PoolState  # noqa: E402

from .conftest import compose  # noqa: E402
from .helpers import ARGS, joined_result, run_in_thread  # noqa: E402


def on_disk(run_dir: Path, round: int) -> dict[int, object]:
    path = run_dir / "answers" / f"round_{round}.json"
    if not path.exists():
        return {}
    return {a["index"]: a["label"] for a in json.loads(path.read_text())["answers"]}


@pytest.mark.usefixtures("store")  # a copied, initialised MLflow store
def test_label_two_rounds_in_headless_chromium(tmp_path):
    y = digits().targets
    cfg = compose(["oracle=web", "oracle.port=0", "trainer.max_epochs=2", "loop.initial_size=6",
                   "loop.query_size=4", "loop.rounds=1", "strategy=margin"], tmp_path)
    exp = Experiment(cfg, tmp_path / "job")
    thread, out, url = run_in_thread(exp)
    assert url and url.startswith("http://127.0.0.1:")
    given: dict[int, int] = {}
    skipped: set[int] = set()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)  # the token URL: sets the session cookie, redirects to the page
            assert page.url == exp.oracle.base_url

            def shows(selector: str, text: str | re.Pattern, timeout: float | None = None) -> None:
                page.locator(selector, has_text=text).wait_for(timeout=timeout)

            def current() -> int:
                page.wait_for_selector("#labelling:not([hidden]) #sample-image[data-index]")
                return int(page.get_attribute("#sample-image", "data-index"))

            def moved_from(prev: int) -> None:
                page.wait_for_selector(f"#labelling[hidden], #sample-image:not([data-index='{prev}'])",
                                       state="attached")

            # ---- round 0: no suggestions; 3 by clicking, reload, 3 by keyboard
            shows("#progress-text", "round 0: sample 1 of 6")
            assert "No suggestion" in page.text_content("#suggestion")
            page.keyboard.press("Enter")  # nothing selected: refused with a message, nothing stored
            shows("#message", "no class selected")
            for _ in range(3):
                i = current()
                page.click(f"#classes button[data-class='{y[i]}']")
                given[i] = int(y[i])
                moved_from(i)
            assert on_disk(exp.run_dir, 0) == given  # each answer saved at once
            page.reload()
            i = current()
            assert i not in given
            assert page.locator("#answered li").count() == 3
            assert "sample 4 of 6" in page.text_content("#progress-text")
            for _ in range(3):
                i = current()
                page.keyboard.press(str(y[i]))
                given[i] = int(y[i])
                moved_from(i)

            # ---- round 1: the loop trains, then the page shows the new batch by itself
            shows("#progress-text", "round 1: sample 1 of 4", timeout=120_000)
            state = page.evaluate("fetch('/api/state').then(r => r.json())")
            suggested = {it["index"]: it["suggested"] for it in state["items"]}
            assert all(s is not None for s in suggested.values())
            i = current()  # pre-selected suggestion, accepted with Enter
            assert page.get_attribute(f"#classes button[data-class='{suggested[i]}']", "aria-pressed") == "true"
            page.keyboard.press("Enter")
            given[i] = suggested[i]
            moved_from(i)
            i = current()  # skip, then undo the skip, then click a class
            page.keyboard.press("s")
            moved_from(i)
            assert on_disk(exp.run_dir, 1).get(i) == "skip"
            page.click("#undo")
            page.wait_for_selector(f"#sample-image[data-index='{i}']", state="attached")
            assert i not in on_disk(exp.run_dir, 1)
            page.click(f"#classes button[data-class='{(y[i] + 1) % 10}']")  # the person may disagree
            given[i] = int((y[i] + 1) % 10)
            moved_from(i)
            i = current()  # arrow moves the selection from the suggestion, Enter accepts
            page.keyboard.press("ArrowRight")
            page.keyboard.press("Enter")
            given[i] = (suggested[i] + 1) % 10
            moved_from(i)
            i = current()  # skipped for good: returns to the pool
            page.click("#skip")
            skipped.add(i)
            moved_from(i)
            shows("#progress-text", re.compile("the experiment has finished|not reachable|waiting"))
        finally:
            browser.close()

    res = joined_result(thread, out, 120)
    assert res.status == "finished"
    state = PoolState.load(res.run_dir)
    assert state.n_labelled == 9
    labelled = {int(i): int(state.labels[i]) for i in state.labelled_idx}
    assert labelled == given
    assert all(state.pool_mask[i] for i in skipped)
    assert sorted(int(i) for i in np.flatnonzero(state.labelled_round == 0)) == sorted(list(given)[:6])


EVIL = """<!doctype html><title>cute cats</title>
<form id="undo" method="POST" action="{target}api/undo" enctype="text/plain">
  <input name='{{"version": {version}, "x": "' value='"}}'></form>
<script>
  const body = JSON.stringify({{index: 10, label: 1, version: {version}}});
  Promise.allSettled([
    fetch("{target}api/label", {{method: "POST", mode: "no-cors", credentials: "include",
                                 headers: {{"Content-Type": "text/plain"}}, body}}),
    fetch("{target}api/label", {{method: "POST", credentials: "include",
                                 headers: {{"Content-Type": "application/json", "X-Requested-With": "x"}}, body}}),
  ]).then(() => undo.submit());
</script>"""
FRAMING = """<!doctype html><title>cute cats</title><iframe src="{target}"></iframe>"""


def test_hostile_site_and_a_second_tab_change_nothing(tmp_path):
    data = digits()
    y = data.targets
    oracle = WebOracle(port=0)
    oracle.setup(data, tmp_path)
    out: dict = {}
    req = LabelRequest(round=1, idx=np.array([4, 10, 17]), predicted=np.array([2, 3, 4]),
                       confidence=np.array([0.9, 0.6, 0.3]))
    thread = threading.Thread(target=lambda: out.setdefault("result", oracle.label(req)), daemon=True)
    thread.start()
    pages: dict[str, bytes] = {}  # the hostile site's pages by path

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(pages.get(self.path, b""))

        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    given: dict[int, object] = {}
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                context = browser.new_context()
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.goto(oracle.url)
                assert page.url == oracle.base_url
                cookies = context.cookies()
                assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == \
                    [(f"alframe-{oracle.server.server_port}", True, "Strict")]
                page.wait_for_selector("#sample-image[data-index='4']", state="attached")
                page.click(f"#classes button[data-class='{y[4]}']")
                given[4] = int(y[4])
                page.wait_for_selector("#sample-image[data-index='10']", state="attached")
                assert on_disk(tmp_path, 1) == given
                version = oracle.session.version

                # Another site, same browser (the cookie is in the jar): forms, fetches and a frame.
                site = f"http://localhost:{evil.server_address[1]}"  # another site than 127.0.0.1
                pages["/"] = EVIL.format(target=oracle.base_url, version=version).encode()
                pages["/frame"] = FRAMING.format(target=oracle.base_url).encode()
                attacker = context.new_page()
                attacker.goto(f"{site}/")
                attacker.wait_for_url(f"{oracle.base_url}api/undo")  # the form was sent and refused
                assert '"error"' in attacker.content() and "not authorised" in attacker.content()
                assert on_disk(tmp_path, 1) == given and oracle.session.version == version
                attacker.goto(f"{site}/frame", wait_until="load")
                frame = next(f for f in attacker.frames if f != attacker.main_frame)
                for _ in range(300):  # the refused frame commits its error page after the page's load event
                    if frame.url:
                        break
                    attacker.wait_for_timeout(100)
                assert frame.url.startswith("chrome-error:") and "alframe" not in frame.content()  # not framed
                attacker.close()
                assert on_disk(tmp_path, 1) == given and oracle.session.version == version

                # A second tab answers 10 first; the first tab's answer to 10 gets 409 and it
                # shows the current sample (17) instead.
                tab2 = context.new_page()
                tab2.goto(oracle.base_url)
                tab2.wait_for_selector("#sample-image[data-index='10']", state="attached")
                tab2.keyboard.press(str(y[10]))
                given[10] = int(y[10])
                tab2.wait_for_selector("#sample-image[data-index='17']", state="attached")
                page.keyboard.press(str((y[10] + 1) % 10))
                page.locator("#message", has_text="out of date").wait_for()
                page.wait_for_selector("#sample-image[data-index='17']", state="attached")
                assert on_disk(tmp_path, 1) == given
                page.keyboard.press("s")  # the first tab goes on from the current state
                given[17] = "skip"
                page.locator("#progress-text", has_text="all 3 answered").wait_for()
            finally:
                browser.close()
        thread.join(10)
        assert not thread.is_alive()
        assert on_disk(tmp_path, 1) == given
        res = out["result"]
        assert res.idx.tolist() == [4, 10] and res.labels.tolist() == [y[4], y[10]] and res.info["skipped"] == 1
    finally:
        evil.shutdown()
        oracle.close()
