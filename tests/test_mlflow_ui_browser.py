"""The printed MLflow link, opened in a real headless Chromium: a small sweep (2 strategies x 2
seeds on digits) plus a FAILED run and a report in the store; the first screen behind the link
that the last job prints shows the ``test_accuracy`` chart with exactly the sweep's 4 runs, and
nothing above it.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python package
(dev extra); Playwright's own browser download is never used. Starts ``mlflow server`` on
127.0.0.1 with a free port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); the browser test needs it",
                allow_module_level=True)
from mlflow import MlflowClient  # noqa: E402
from playwright import sync_api  # noqa: E402

from alframe.loop.experiment import run_experiment  # noqa: E402
from alframe.reporting.report import make_report  # noqa: E402
from alframe.tracking.run import Tracker  # noqa: E402

from .conftest import compose  # noqa: E402
from .helpers import ARGS  # noqa: E402

SCREEN = {"width": 1280, "height": 800}  # a laptop screen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def chart_cards(page) -> list[dict]:
    """Visible chart cards, top to bottom: title, box, and the run names in the card's legend."""
    return page.evaluate("""() => [...document.querySelectorAll('h4[title]')]
        .filter(h => h.offsetParent !== null)
        .map(h => {
            let card = h;
            while (card && !card.querySelector('.js-plotly-plot')) card = card.parentElement;
            const box = card.getBoundingClientRect();
            const legend = [...card.querySelectorAll('span')].map(s => s.textContent)
                .filter(t => t.endsWith(' (' + h.title + ')'));
            // plotly keeps the drawn data on its graph div
            const traces = (card.querySelector('.js-plotly-plot').data || [])
                .map(t => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || [])}));
            return {title: h.title, top: box.top, bottom: box.bottom, legend: legend, traces: traces};
        })
        .sort((a, b) => a.top - b.top)""")


@pytest.mark.slow
def test_printed_link_shows_all_budget_curves_on_the_first_screen(tmp_path, store, capsys):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    common = ["trainer.max_epochs=1", "loop.initial_size=20", "loop.query_size=10", "loop.rounds=2",
              "mlflow.experiment_name=ui_test", f"mlflow.ui_url={base}"]
    sweep = "2026-01-01_00-00-00-000000"
    for i, (strategy, seed) in enumerate([("random", 0), ("random", 1), ("entropy", 0), ("entropy", 1)]):
        cfg = compose([*common, f"strategy={strategy}", f"seed={seed}"], tmp_path)
        run_experiment(cfg, tmp_path / "multirun" / sweep / str(i), sweep_id=sweep)
    link = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("MLflow UI:")).split()[-1]
    uri = f"sqlite:///{store}"
    failed = Tracker(uri, "ui_test", run_name="entropy-small_cnn-digits-seed2", tags={"sweep_id": sweep})
    failed.log_metrics({"test_accuracy": 0.1}, step=20)
    failed.finish("FAILED")
    make_report(uri, "ui_test", sweep_id=sweep, out=tmp_path / "report", show=False)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ui_test")
    names = sorted(r.info.run_name for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'"))
    assert len(names) == 4 and link.startswith(f"{base}/#/experiments/{exp.experiment_id}/runs?")

    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_http(f"{base}/health", server)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport=SCREEN)
                page.set_default_timeout(120_000)
                page.goto(link)
                page.wait_for_selector("h4[title='test_accuracy']")
                page.wait_for_function(
                    "n => { const h = document.querySelector(\"h4[title='test_accuracy']\"); let c = h;"
                    " while (c && !c.querySelector('.js-plotly-plot')) c = c.parentElement;"
                    " return c && c.querySelectorAll('.scatterlayer .trace').length >= n; }", arg=4)
                cards = chart_cards(page)
                first = cards[0]
                assert first["title"] == "test_accuracy", [c["title"] for c in cards]
                assert 0 < first["top"] and first["bottom"] <= SCREEN["height"]  # whole chart on the first screen
                # every run of the sweep is drawn, and nothing else (no FAILED run, no report run)
                assert sorted(t.rsplit(" (", 1)[0] for t in first["legend"]) == names
                # the lines are the runs' MLflow values against the number of labels
                drawn = [(t["x"], t["y"]) for t in first["traces"] if t["x"]]
                for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'"):
                    hist = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "test_accuracy"))
                    assert [x for x, _ in hist] == [20, 30, 40]
                    assert any(x == [20, 30, 40] and y == pytest.approx([v for _, v in hist]) for x, y in drawn), \
                        (r.info.run_name, first["traces"])
                assert "Budget curve" in page.inner_text("body")
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(30)
