"""``oracle=label_studio`` with a person in Label Studio's own labelling page: one round of a
digits job labelled with the keyboard in headless chromium, as an annotator would.

Usage: ``.venv/bin/python scripts/label_studio_browser_check.py [--keep]`` from the repository
root (``make label-studio-check`` runs it after the API checks; the slow test
``tests/test_label_studio_live.py`` runs :func:`run`). It needs Debian's ``chromium`` and the
``playwright`` package (dev extra; Playwright's own browser download is never used); without them it
prints one line saying which is missing and exits 0. It

1. starts Label Studio from ``.venv-label-studio/`` on 127.0.0.1 (installed first when missing,
   as ``scripts/label_studio_check.py`` does) and a digits job (``oracle=label_studio``, 10 initial
   labels, one round of :data:`QUERY`) that goes on by itself;
2. answers round 0 through the API, then for round 1 logs in, opens the project's tab
   *alframe: to label* and presses *Label All Tasks*; for every task the page shows it reads the
   task id from the page (mapped to alframe's pool index through the API), checks the image is
   shown and the model's prediction pre-selected, presses the class's hotkey (``0``-``9``) and
   submits with Ctrl+Enter. Most tasks get their true digit; by acquisition rank: the first gets
   the key of the pre-selected class first (which unselects it: Ctrl+Enter then shows the config's
   required message and sends nothing), the second a class that is neither its prediction nor its
   truth, the third its prediction accepted as is (Ctrl+Enter alone), and the last is skipped with
   the page's *Skip* button;
3. waits for the job to finish and checks that every stored label is what the page gave, the skipped
   sample is back in the pool, MLflow's ``skipped`` and ``labels_received`` of round 1 and the run's
   status; prints the seconds per task in the browser.

Exit status 0 when every check passed (or the check was skipped), 1 otherwise.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import label_studio_check as lsc  # noqa: E402
import label_studio_live_check as live  # noqa: E402

QUERY = 10  # round 1's batch, labelled in the browser
REPO = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
TASK_ID = ".lsf-current-task__task-id"  # the bottom bar's "#<task id>" (Label Studio 1.23)
REQUIRED = "Choose a class, or press Skip"  # requiredMessage of alframe's labelling config


def chromium() -> str | None:
    """Debian's chromium, or None."""
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def missing() -> str | None:
    """Why the browser check cannot run on this machine, or None when it can."""
    if chromium() is None:
        return "Debian's chromium is not installed (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


class Page:
    """Label Studio's labelling page of one project, driven like a person does it."""

    def __init__(self, page, server):
        self.page, self.server = page, server

    def login(self) -> None:
        self.page.goto(self.server.url + "/user/login")
        self.page.fill("input[name=email]", "alframe@example.com")
        self.page.fill("input[name=password]", self.server.password)
        self.page.click("button[type=submit], input[type=submit]")
        self.page.wait_for_load_state("networkidle")

    def label_all(self, pid: int, view: int) -> None:
        """Open the project's tab ``view`` and press *Label All Tasks*."""
        self.page.goto(f"{self.server.url}/projects/{pid}/data?tab={view}")
        self.page.locator("button").filter(has_text=re.compile(r"^Label All Tasks$")).click(timeout=60_000)

    def task_id(self, other_than: int | None = None, timeout: float = 60) -> int:
        """The id of the task shown, once it is not ``other_than`` and its image is loaded."""
        found = self.page.wait_for_function(
            """(old) => {
                const e = document.querySelector('%s');
                const img = document.querySelector('img[alt="image"]');
                const id = e && e.firstChild ? parseInt(e.firstChild.textContent.replace('#', '')) : NaN;
                return !isNaN(id) && id !== old && img && img.complete && img.naturalWidth > 0 ? id : false;
            }""" % TASK_ID, arg=other_than if other_than is not None else -1, timeout=timeout * 1000)
        return int(found.json_value())

    def selected(self) -> list[str]:
        """The classes ticked in the ``Choices`` (a pre-annotation shows as ticked)."""
        return [e.get_attribute("name") for e in self.page.query_selector_all(".lsf-choices input[type=checkbox]")
                if e.is_checked()]

    def press(self, key: str) -> None:
        self.page.keyboard.press(key.replace("shift+", "Shift+"))

    def _answer(self, tid: int, act) -> dict:
        """Do ``act`` and return the annotation Label Studio stored for task ``tid`` (HTTP 201)."""
        def posted(r) -> bool:
            return r.request.method == "POST" and f"/api/tasks/{tid}/annotations" in r.url

        with self.page.expect_response(posted, timeout=60_000) as got:
            act()
        if got.value.status != 201:
            raise SystemExit(f"label-studio-check: the page's answer to task {tid} got HTTP {got.value.status}")
        return got.value.json()

    def submit(self, tid: int) -> dict:
        return self._answer(tid, lambda: self.press("Control+Enter"))

    def skip(self, tid: int) -> dict:
        return self._answer(tid, self.page.locator("button").filter(has_text=re.compile(r"^Skip$")).click)

    def refused(self) -> bool:
        """Ctrl+Enter with no class: the required message shows (closed with OK) and nothing is sent."""
        sent: list[str] = []
        listener = lambda r: sent.append(r.url) if r.method == "POST" and "/annotations" in r.url else None  # noqa: E731
        self.page.on("request", listener)
        self.press("Control+Enter")
        shown = self.page.get_by_text(REQUIRED)
        shown.wait_for(timeout=10_000)
        self.page.locator("button").filter(has_text=re.compile(r"^OK$")).click()
        shown.wait_for(state="hidden", timeout=10_000)
        self.page.remove_listener("request", listener)
        return not sent


def run(server, python: str, out: Path, truth, check, say, browser_exe: str) -> dict:
    """The scenario of the module docstring on a started :class:`label_studio_check.LabelStudio`;
    ``check(ok, what)`` records each check. Returns the measurements: ``seconds_per_task`` (from
    the page showing a task to Label Studio storing its answer), ``browser_s`` (the whole batch),
    ``done_s`` (from the last answer to the job's end)."""
    from playwright import sync_api

    from alframe.oracles.label_studio import hotkeys
    from alframe.oracles.label_studio_live import VIEW
    from alframe.rundir.state import PoolState

    out.mkdir(parents=True, exist_ok=True)
    title = f"alframe browser {int(time.time())}"
    people = live.People(server, title)
    job = live.Job(python, out, server.url, title)
    job.start(server.token, f"loop.query_size={QUERY}", "loop.rounds=1")
    y = [int(v) for v in truth]
    keys = hotkeys(10)
    try:
        tasks, _ = live.wait_for(people, job, 0, live.INITIAL)
        for i, t in tasks.items():
            people.submit(t, y[i])
        tasks, _ = live.wait_for(people, job, 1, QUERY)
        pred = {i: live.prediction(t) for i, t in tasks.items()}
        check(all(p is not None for p in pred.values()),
              f"round 1: {QUERY} tasks in Label Studio, each with the model's prediction")
        index_of = {t["id"]: i for i, t in tasks.items()}
        by_rank = sorted(tasks, key=lambda i: tasks[i]["data"]["rank"])
        probe_i, other_i, accept_i, skip_i = by_rank[0], by_rank[1], by_rank[2], by_rank[-1]
        plan = {i: y[i] for i in tasks}  # what the page gives (None: Skip)
        plan[other_i] = next(k for k in range(10) if k not in (y[other_i], pred[other_i]))
        plan[accept_i] = pred[accept_i]  # the suggestion accepted as is: Ctrl+Enter alone
        plan[skip_i] = None
        view = next(v["id"] for v in server.call("GET", f"/api/dm/views?project={people.pid}")
                    if v["data"].get("title") == VIEW)

        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_exe, headless=True, args=ARGS)
            try:
                page = Page(browser.new_page(viewport={"width": 1400, "height": 900}), server)
                page.login()
                t_browser = time.time()
                page.label_all(people.pid, view)
                served, seconds, loads, shown_ok, replaced, tid = [], [], [], 0, 0, None
                t_prev = time.time()
                for _ in range(QUERY):
                    tid = page.task_id(other_than=tid)
                    loads.append(time.time() - t_prev)
                    if tid not in index_of:
                        check(False, f"the page shows task {tid}, not one of round 1's tasks {sorted(index_of)}")
                    i = index_of[tid]
                    served.append(i)
                    shown_ok += page.selected() == [str(pred[i])]
                    if i == probe_i:
                        page.press(keys[pred[i]])  # the key of the pre-selected class unselects it
                        check(page.selected() == [] and page.refused(),
                              f"task {tid}: the key of the pre-selected class {pred[i]} unselects it; Ctrl+Enter "
                              f"then shows {REQUIRED!r} and sends nothing (required=\"true\")")
                    if plan[i] is None:
                        a = page.skip(tid)
                        check(a["was_cancelled"], f"task {tid} (index {i}): the Skip button stored a cancelled "
                                                  "annotation")
                    else:
                        before, how = page.selected(), "Ctrl+Enter alone"
                        if before != [str(plan[i])]:
                            page.press(keys[plan[i]])
                            how = f"key {keys[plan[i]]} + Ctrl+Enter"
                            replaced += before == [str(pred[i])] and page.selected() == [str(plan[i])]
                        a = page.submit(tid)
                        r = a["result"][0] if a["result"] else {"value": {"choices": []}}
                        check(r["value"]["choices"] == [str(plan[i])] and not a["was_cancelled"],
                              f"task {tid} (index {i}): {how} stored {r['value']['choices']} (prediction "
                              f"{pred[i]}, true {y[i]}, origin {r.get('origin')})")
                    people.given[i] = plan[i]
                    people.answered_at = time.time()
                    seconds.append(people.answered_at - t_prev)
                    t_prev = people.answered_at
                browser_s = time.time() - t_browser
            finally:
                browser.close()
        changed = [i for i in tasks if plan[i] is not None and plan[i] != pred[i]]
        check(shown_ok == QUERY, f"every task showed its prediction pre-selected ({shown_ok} of {QUERY})")
        check(replaced == len([i for i in changed if i != probe_i]) and other_i in changed,
              f"{len(changed)} answers other than the prediction: pressing the class's key replaced the pre-selected "
              f"one each time (a single-choice Choices); {other_i} got {plan[other_i]} (prediction {pred[other_i]}, "
              f"true {y[other_i]}); {accept_i} accepted as predicted ({pred[accept_i]})")
        check(served == by_rank, "Label All Tasks on the alframe tab served the tasks highest acquisition score "
                                 f"first (ranks {[tasks[i]['data']['rank'] for i in served]})")

        rc = job.wait(600)
        done_s = time.time() - people.answered_at
        log = job.log()
        check(rc == 0 and "Done." in log, f"the job took the page's answers and finished by itself (exit 0, "
                                          f"{done_s:.1f} s after the last answer)")
    finally:
        if job.proc is not None and job.proc.poll() is None:
            job.kill()

    run_dir = next(out.glob("runs/*/*/label_studio.json")).parent
    state = PoolState.load(run_dir)
    stored = {int(i): int(state.labels[i]) for i in state.labelled_idx}
    round1 = {int(i): int(state.labels[i]) for i in state.labelled_idx if state.labelled_round[i] == 1}
    want1 = {i: v for i, v in plan.items() if v is not None}
    check(round1 == want1 and stored == {i: v for i, v in people.given.items() if v is not None},
          f"every label stored for round 1 is the one the page gave ({len(want1)} labels, {other_i} -> "
          f"{plan[other_i]}), and round 0's are the API's")
    check(bool(state.pool_mask[skip_i]) and skip_i not in stored, f"the skipped sample {skip_i} is back in the pool")
    metrics = live.mlflow_metrics(out, state.progress.run_id)
    check(metrics["skipped"][-1] == 1 and metrics["labels_received"][-1] == QUERY - 1,
          f"MLflow, round 1: skipped=1, labels_received={QUERY - 1}")
    from mlflow import MlflowClient

    status = MlflowClient(f"sqlite:///{out}/mlflow.db").get_run(state.progress.run_id).info.status
    check(status == "FINISHED", f"the MLflow run is {status}")
    return {"seconds_per_task": seconds, "load_s": loads, "browser_s": browser_s, "done_s": done_s,
            "label_seconds": metrics.get("label_seconds", [float("nan")])[-1]}


def main() -> int:
    args = lsc.arguments(__doc__).parse_args()
    why = missing()
    if why:
        lsc.say(f"label-studio-check: browser check skipped: {why}")
        return 0
    from alframe.data.digits import digits

    t_start = time.time()
    exe = lsc.install(args.venv)
    tmp = Path(tempfile.mkdtemp(prefix="alframe-ls-browser-"))
    server = lsc.LabelStudio(exe, tmp / "label-studio-data", tmp / "label-studio.log")
    passed = False
    try:
        lsc.say(f"\nBrowser check: round 1 labelled in Label Studio's page with hotkeys (chromium {chromium()}) ...")
        lsc.check(True, f"Label Studio answered /health after {server.wait_up(args.start_timeout):.0f} s on "
                        f"127.0.0.1:{server.port}")
        m = run(server, args.python, tmp / "alframe", digits().targets, lsc.check, lsc.say, chromium())
        s, load = m["seconds_per_task"], m["load_s"]
        lsc.say(f"  seconds per task in the browser (previous answer stored -> this one stored): mean "
                f"{sum(s) / len(s):.2f}, min {min(s):.2f}, max {max(s):.2f} (the first includes the page's start "
                f"and the required-message probe); of which the page showing the next task: mean "
                f"{sum(load[1:]) / len(load[1:]):.2f}; {m['browser_s']:.1f} s for the batch from Label All Tasks; "
                f"Label Studio's lead time (MLflow label_seconds) {m['label_seconds']:.2f} s; the job ended "
                f"{m['done_s']:.1f} s after the last answer")
        passed = True
        lsc.say(f"\nAll {len(lsc.CHECKS)} browser checks passed in {time.time() - t_start:.0f} s.")
        return 0
    finally:
        server.stop()
        lsc.say(f"Label Studio stopped (exit {server.proc.returncode}).")
        if passed and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            lsc.say(f"Files kept in {tmp} (server log: {server.log.name})")


if __name__ == "__main__":
    sys.exit(main())
