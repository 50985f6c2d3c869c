"""``oracle=label_studio`` against a real Label Studio: a 3-round digits job that goes on by itself
while two people answer through the server's API, with what happens in real projects on the way.

Run by ``make label-studio-check`` (after the files round trip, on the same server) and by the
slow test ``tests/test_label_studio_live.py``. :func:`run` needs a started
:class:`label_studio_check.LabelStudio` and does, with alframe as a separate process:

- round 0 (10 tasks, no model yet): a Skip; annotator 2 answers wrong, then annotator 1 right
  (a disagreement; the latest counts); a re-label (a second annotation); an edited annotation;
- round 1 (5 tasks with the model's prediction): one answer other than the prediction, one
  accepted as is; then alframe is killed (SIGKILL) mid-round, two tasks are answered while it
  is down, and ``loop.resume=true`` (the other token kind) picks up the same tasks;
- round 2: a label of round 1 is changed in Label Studio after its round was used (a
  correction); Label Studio is stopped and started again mid-round (alframe retries);
- round 3: plain answers after :data:`WAIT_S` seconds (alframe's poll cost is measured there);
  the job finishes.

It checks every stored label against what the annotators gave, that no task was imported twice,
the corrections, disagreement and skip metrics in MLflow, and measures the requests per minute
while alframe waits and the seconds from a batch's last answer to the next batch in Label Studio.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

ROUNDS, INITIAL, QUERY = 3, 10, 5
WAIT_S = 30  # round 3 is answered after this many seconds: the poll cost is measured there


def choice(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


class People:
    """Two annotators working in one Label Studio project through its API (as the UI does)."""

    def __init__(self, server, title: str):
        self.server, self.title, self.pid = server, title, None
        self.given: dict[int, int | None] = {}  # index -> the label that counts (None: skipped)
        self.answered_at: float = 0.0
        self.second = server.call("POST", "/api/users", {"email": "annotator2@example.com", "username": "annotator2",
                                                         "password": "annotator-2-pass"})["id"]
        self.first = server.call("GET", "/api/current-user/whoami")["id"]

    def tasks(self, round: int) -> dict[int, dict]:
        if self.pid is None:
            found = self.server.call("GET", "/api/projects?title=" + urllib.parse.quote(self.title))
            found = [p for p in (found.get("results", found) if isinstance(found, dict) else found)
                     if p["title"] == self.title]
            if not found:
                return {}
            self.pid = found[0]["id"]
        q = json.dumps({"filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:data.round", "operator": "equal", "type": "Number", "value": round}]}})
        got = self.server.call("GET", f"/api/tasks?project={self.pid}&fields=all&page_size=1000&query="
                               + urllib.parse.quote(q))
        return {int(t["data"]["index"]): t for t in got["tasks"]}

    def all_tasks(self) -> list[dict]:
        got = self.server.call("GET", f"/api/tasks?project={self.pid}&page_size=1000")
        return got["tasks"]

    def submit(self, task: dict, label: int | None, who: int | None = None, index: int | None = None) -> int:
        body = {"result": [], "was_cancelled": True} if label is None else {"result": choice(str(label))}
        body.update(completed_by=who or self.first, lead_time=1.5)
        a = self.server.call("POST", f"/api/tasks/{task['id']}/annotations", body)
        self.given[int(task["data"]["index"]) if index is None else index] = label
        self.answered_at = time.time()
        return a["id"]

    def edit(self, annotation: int, index: int, label: int) -> None:
        self.server.call("PATCH", f"/api/annotations/{annotation}", {"result": choice(str(label))})
        self.given[index] = label
        self.answered_at = time.time()


class Job:
    """The alframe process (``python -m alframe.cli.run``), its output in a log file."""

    def __init__(self, python: str, out: Path, url: str, title: str):
        self.python, self.out, self.url, self.title, self.n = python, out, url, title, 0
        self.proc: subprocess.Popen | None = None

    def start(self, key: str, *extra: str) -> None:
        self.n += 1
        self.log_path = self.out / f"alframe-{self.n}.log"
        args = [self.python, "-m", "alframe.cli.run", "oracle=label_studio", f"oracle.url={self.url}",
                f"oracle.project={self.title}", f"loop.initial_size={INITIAL}", f"loop.query_size={QUERY}",
                f"loop.rounds={ROUNDS}", "seed=0", f"paths.output_root={self.out}",
                f"mlflow.tracking_uri=sqlite:///{self.out}/mlflow.db", *extra]
        env = {**os.environ, "LABEL_STUDIO_API_KEY": key, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(args, cwd=self.out, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.out.glob("alframe-*.log")))

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() not in (None,):
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"label-studio-check: alframe exited with {self.proc.returncode}:\n{tail}")

    def wait_text(self, text: str, timeout: float = 300) -> None:
        """Until the current alframe process has printed ``text``."""
        t0 = time.time()
        while text not in self.log_path.read_text(errors="replace"):
            self.alive()
            if time.time() - t0 > timeout:
                raise SystemExit(f"label-studio-check: alframe did not print {text!r} in {timeout:.0f} s:\n"
                                 f"{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.25)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


def wait_for(people: People, job: Job, round: int, n: int, timeout: float = 600) -> tuple[dict[int, dict], float]:
    """The ``n`` tasks of ``round`` once they are all in Label Studio, and when they were seen."""
    t0 = time.time()
    while True:
        job.alive()
        tasks = people.tasks(round)
        if len(tasks) >= n:
            return tasks, time.time()
        if time.time() - t0 > timeout:
            raise SystemExit(f"label-studio-check: round {round}'s {n} tasks did not appear in {timeout:.0f} s "
                             f"(found {len(tasks)}); alframe's output:\n{job.log()[-3000:]}")
        time.sleep(0.25)


def prediction(task: dict) -> int | None:
    preds = task.get("predictions") or []
    return int(preds[0]["result"][0]["value"]["choices"][0]) if preds else None


def run(server, python: str, out: Path, truth, check, say) -> dict:
    """The scenario of the module docstring; ``check(ok, what)`` records each check. Returns the
    measurements: ``latency_s`` (per round change), ``requests_per_minute`` (per round)."""
    from alframe.rundir.state import PoolState

    out.mkdir(parents=True, exist_ok=True)
    title = f"alframe live {int(time.time())}"
    pat = server.call("POST", "/api/token/", {})["token"]  # a personal access token (a JWT refresh token)
    people = People(server, title)
    job = Job(python, out, server.url, title)
    job.start(pat)
    y = [int(v) for v in truth]
    wrong = {i: (y[i] + 1) % 10 for i in range(len(y))}
    latency: list[float] = []

    # round 0: the initial set, no model
    tasks, _ = wait_for(people, job, 0, INITIAL)
    check(len(tasks) == INITIAL and all(not t.get("predictions") for t in tasks.values()),
          f"round 0: alframe created project {title!r} (personal access token) and imported {INITIAL} tasks")
    idx0 = sorted(tasks)
    skip_i, split_i, relabel_i, edit_i = idx0[:4]
    people.submit(tasks[skip_i], None)
    people.submit(tasks[split_i], wrong[split_i], who=people.second)
    people.submit(tasks[split_i], y[split_i])  # annotator 1, later: counts
    people.submit(tasks[relabel_i], wrong[relabel_i])
    people.submit(tasks[relabel_i], y[relabel_i])  # a second annotation by the same person
    ann = people.submit(tasks[edit_i], wrong[edit_i])
    people.edit(ann, edit_i, y[edit_i])
    for k, i in enumerate(idx0[4:]):
        people.submit(tasks[i], y[i], who=people.second if k % 2 else people.first)
    say(f"  round 0 answered: skip {skip_i}, annotators disagree on {split_i}, {relabel_i} re-labelled, "
        f"{edit_i} edited")

    # round 1: predictions; alframe killed mid-round and resumed with the legacy token
    done = people.answered_at
    tasks, seen = wait_for(people, job, 1, QUERY)
    latency.append(seen - done)
    check(all(prediction(t) is not None and t["data"].get("score") is not None for t in tasks.values()),
          f"round 1: {QUERY} tasks with the model's prediction (pre-annotation) and the acquisition score as data, "
          f"{seen - done:.1f} s after round 0's last answer")
    idx1 = sorted(tasks, key=lambda i: -tasks[i]["data"]["score"])
    changed_i, accepted_i = idx1[0], idx1[1]
    p = prediction(tasks[changed_i])
    people.submit(tasks[changed_i], y[changed_i] if p != y[changed_i] else wrong[changed_i])
    people.submit(tasks[accepted_i], prediction(tasks[accepted_i]))
    time.sleep(3)
    job.kill()
    people.submit(tasks[idx1[2]], y[idx1[2]], who=people.second)
    people.submit(tasks[idx1[3]], y[idx1[3]])
    job.start(server.token, "loop.resume=true")  # the legacy token this time
    job.wait_text(f"round 1: 4 of {QUERY} labelled")  # the answers given while it was down
    people.submit(tasks[idx1[4]], y[idx1[4]])
    say(f"  round 1 answered: {changed_i} other than the prediction ({p} -> {people.given[changed_i]}), "
        f"{accepted_i} accepted as predicted; alframe killed after 2 answers, resumed after 4")

    # round 2: a used label of round 1 changed; Label Studio restarted mid-round
    done = people.answered_at
    tasks, seen = wait_for(people, job, 2, QUERY)
    latency.append(seen - done)
    check(len(people.tasks(1)) == QUERY, "round 1 went on after the kill and loop.resume=true without a task "
                                         "imported twice")
    t1 = people.tasks(1)[accepted_i]
    latest = max(t1["annotations"], key=lambda a: a["updated_at"])
    used = people.given[accepted_i]
    people.edit(latest["id"], accepted_i, (used + 1) % 10)
    idx2 = sorted(tasks)
    for i in idx2[:2]:
        people.submit(tasks[i], y[i])
    down = server.restart(600, pause=5)
    say(f"  round 2: {accepted_i} re-labelled after round 1 was used; Label Studio restarted ({down:.0f} s down)")
    for i in idx2[2:]:
        people.submit(tasks[i], y[i], who=people.second)

    # round 3: plain answers; the job finishes
    done = people.answered_at
    tasks, seen = wait_for(people, job, 3, QUERY)
    latency.append(seen - done)
    time.sleep(WAIT_S)  # a person takes their time: alframe polls meanwhile
    for i, t in tasks.items():
        people.submit(t, y[i])
    rc = job.wait(600)
    log = job.log()
    check(rc == 0 and "Done." in log, "the job finished by itself after round 3 (exit 0)")
    check(log.count("is not answering") == 1 and "answers again" in log,
          "Label Studio's restart: one line while it was down, then alframe went on")

    run_dir = next(out.glob("runs/*/*/label_studio.json")).parent
    state = PoolState.load(run_dir)
    stored = {int(i): int(state.labels[i]) for i in state.labelled_idx}
    want = {i: v for i, v in people.given.items() if v is not None}
    check(stored == want, f"every stored label is the one the annotators gave last ({len(want)} labels; "
                          f"skipped {[i for i, v in people.given.items() if v is None]} not stored)")
    check(state.progress.corrections == [{"index": accepted_i, "old": used, "new": want[accepted_i], "round": 2}],
          f"the label changed after its round is a correction recorded in round 2: {state.progress.corrections}")
    mine = [t for t in people.all_tasks() if t["data"].get("run", "").startswith(run_dir.name)]
    check(len(mine) == INITIAL + ROUNDS * QUERY, f"{len(mine)} tasks in the project: none imported twice")
    metrics = mlflow_metrics(out, state.progress.run_id)
    check(metrics["skipped"][0] == 1 and metrics["annotator_disagreements"][0] == 1
          and metrics["labels_corrected"] == [0, 0, 1, 0],
          "MLflow: round 0 skipped=1 and annotator_disagreements=1; labels_corrected=1 in round 2")
    rpm = [60 * r / w for r, w in zip(metrics["label_studio_requests"], metrics["label_wait_seconds"], strict=True)]
    return {"latency_s": latency, "requests_per_minute": rpm, "wait_s": metrics["label_wait_seconds"]}


def mlflow_metrics(out: Path, run_id: str) -> dict[str, list[float]]:
    """Each metric's values of the run, by step (number of labels)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    keys = client.get_run(run_id).data.metrics
    return {k: [m.value for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)] for k in keys}
