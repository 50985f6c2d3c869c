"""End to end in a real headless Chromium: a person labels two rounds of the digits experiment
on the web page, by clicking and by keyboard, reloads midway, skips and undoes; every label
reaches the pool state and the run finishes.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package (dev extra). Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import shutil
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
            page.goto(url)

            def current() -> int:
                page.wait_for_selector("#labelling:not([hidden]) #sample-image[data-index]")
                return int(page.get_attribute("#sample-image", "data-index"))

            def moved_from(prev: int) -> None:
                page.wait_for_function(
                    "prev => document.getElementById('labelling').hidden || "
                    "document.getElementById('sample-image').dataset.index !== String(prev)", arg=prev)

            # ---- round 0: no suggestions; 3 by clicking, reload, 3 by keyboard
            page.wait_for_function("document.getElementById('progress-text').textContent"
                                   ".includes('round 0: sample 1 of 6')")
            assert "No suggestion" in page.text_content("#suggestion")
            page.keyboard.press("Enter")  # nothing selected: refused with a message, nothing stored
            page.wait_for_function("document.getElementById('message').textContent.includes('no class selected')")
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
            page.wait_for_function("document.getElementById('progress-text').textContent"
                                   ".includes('round 1: sample 1 of 4')", timeout=120_000)
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
            page.wait_for_function("i => document.getElementById('sample-image').dataset.index === String(i)",
                                   arg=i)
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
            page.wait_for_function("['the experiment has finished', 'not reachable', 'waiting']"
                                   ".some(t => document.getElementById('progress-text').textContent.includes(t))")
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
