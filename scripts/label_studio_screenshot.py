"""The screenshot of docs/human-in-the-loop.md: a real Label Studio's task list of an
``oracle=label_studio`` job, on alframe's tab (unanswered tasks, highest acquisition score first).

Starts Label Studio as ``make label-studio-check`` does (``.venv-label-studio/``, 127.0.0.1), runs
a digits job whose round 0 is answered through the API, waits for round 1's batch and has Debian's
chromium (headless, driven by Playwright as ``tests/test_web_browser.py`` does) log in and take
the picture. Usage: ``.venv/bin/python scripts/label_studio_screenshot.py [--out PATH]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import label_studio_check as lsc  # noqa: E402
import label_studio_live_check as live  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "label_studio_tasks_by_score.png")
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is needed: apt-get install -y chromium")
    from playwright import sync_api

    from alframe.data.digits import digits

    tmp = Path(tempfile.mkdtemp(prefix="alframe-ls-shot-"))
    server = lsc.LabelStudio(lsc.install(REPO / ".venv-label-studio"), tmp / "data", tmp / "label-studio.log")
    job = None
    try:
        server.wait_up(600)
        title = "alframe digits"
        people = live.People(server, title)
        job = live.Job(sys.executable, tmp / "alframe", server.url, title)
        (tmp / "alframe").mkdir()
        job.start(server.token, "loop.query_size=10", "loop.rounds=1")
        y = digits().targets
        tasks, _ = live.wait_for(people, job, 0, live.INITIAL)
        for i, t in tasks.items():
            people.submit(t, int(y[i]))
        live.wait_for(people, job, 1, 10)
        time.sleep(2)
        view = next(v for v in server.call("GET", f"/api/dm/views?project={people.pid}")
                    if v["data"].get("title") == "alframe: to label")
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1500, "height": 820})
            page.goto(server.url + "/user/login")
            page.fill("input[name=email]", "alframe@example.com")
            page.fill("input[name=password]", server.password)
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{server.url}/projects/{people.pid}/data?tab={view['id']}")
            page.wait_for_selector("text=score", timeout=60_000)
            page.wait_for_timeout(4000)  # thumbnails
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
        print(f"wrote {args.out}")
        return 0
    finally:
        if job is not None and job.proc is not None and job.proc.poll() is None:
            job.kill()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
