"""One real round trip between alframe's files oracle and a real Label Studio server.

``make label-studio-check`` runs this script (not part of ``make test``: it installs Label
Studio, ~300 MB, and takes minutes). It

1. installs ``label-studio`` (pinned, :data:`LS_VERSION`) into its own venv ``.venv-label-studio/``
   with the machine's ``python3`` (outside alframe's dependencies; reused when present);
2. starts it bound to 127.0.0.1 on a free port with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``,
   its data in a temporary folder and an admin user + API token created non-interactively;
3. runs alframe (``oracle=files``, digits, 10 initial labels, one round of 5) until it waits for labels;
4. through Label Studio's HTTP API: creates a project with alframe's labelling config, adds a
   Local Files source storage on the run's ``queries`` folder, imports alframe's tasks, checks an
   image is served, annotates (a skip, a re-label, an edit, the rest the true digit), exports
   JSON and JSON_MIN, puts the export into the round folder and resumes alframe
   (``loop.resume=true``); round 1 goes through the same project (reused), exported as JSON_MIN;
5. checks the labels alframe recorded against the true digits, prints every check;
6. runs ``oracle=label_studio`` through the same server for 3 rounds with no manual step
   (:mod:`label_studio_live_check`: two annotators, a skip, a kill of alframe and a restart of
   Label Studio mid-round), prints the poll cost and the latency between rounds, and stops the
   server (also on failure).

Exit status 0 when every check passed, 1 otherwise. Run it from the repository root with the
Python that has alframe installed: ``.venv/bin/python scripts/label_studio_check.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

LS_VERSION = "1.23.2"
REPO = Path(__file__).resolve().parents[1]
CHECKS: list[str] = []


def say(msg: str) -> None:
    print(msg, flush=True)


def check(ok: bool, what: str) -> None:
    """Record and print one check; raise when it failed."""
    CHECKS.append(("ok   " if ok else "FAIL ") + what)
    say(CHECKS[-1])
    if not ok:
        raise SystemExit(f"label-studio-check: failed: {what}")


def install(venv: Path) -> Path:
    """``label-studio`` executable of ``venv``, installing it there first when missing."""
    exe = venv / "bin" / "label-studio"
    pip_log = venv.parent / f"{venv.name}-pip.log"
    if exe.is_file():
        say(f"Label Studio venv present: {venv}")
        return exe
    python3 = shutil.which("python3")
    if python3 is None:
        raise SystemExit("label-studio-check: error: python3 not found on PATH (needed to create the venv)")
    say(f"Installing label-studio=={LS_VERSION} into {venv} (pip log: {pip_log}); this takes minutes ...")
    t0 = time.time()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with pip_log.open("w") as log:
        subprocess.run([python3, "-m", "venv", str(venv)], check=True)
        for args in (["--upgrade", "pip"], [f"label-studio=={LS_VERSION}"]):
            r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *args],
                               stdout=log, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                raise SystemExit(f"label-studio-check: error: pip install {' '.join(args)} failed "
                                 f"(exit {r.returncode}); see {pip_log}")
    say(f"  installed in {time.time() - t0:.0f} s")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    """A Label Studio server process and a tiny JSON client for its HTTP API."""

    def __init__(self, exe: Path, data_dir: Path, log_path: Path, env: dict[str, str] | None = None):
        self.port, self.token = free_port(), secrets.token_hex(20)
        self.url = f"http://127.0.0.1:{self.port}"
        self.exe, self.data_dir, self.password, self.env = exe, data_dir, secrets.token_hex(8), env or {}
        self.log = log_path.open("w")
        self._start()

    def _start(self) -> None:
        env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
               "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "/", "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
               "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "COLLECT_ANALYTICS": "false",
               "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", **self.env}
        self.proc = subprocess.Popen(
            [str(self.exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--username", "alframe@example.com", "--password", self.password,
             "--user-token", self.token, "--enable-legacy-api-token", "--log-level", "WARNING"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def restart(self, timeout: float, pause: float = 0.0) -> float:
        """Stop the server, wait ``pause`` seconds, start it again on the same port and data;
        returns the seconds it was down."""
        t0 = time.time()
        self.stop(close_log=False)
        time.sleep(pause)
        self._start()
        self.wait_up(timeout)
        return time.time() - t0

    def wait_up(self, timeout: float) -> float:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"label-studio-check: error: Label Studio exited with {self.proc.returncode} "
                                 f"while starting; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return time.time() - t0
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(2)
        raise SystemExit(f"label-studio-check: error: Label Studio did not answer on {self.url} within "
                         f"{timeout:.0f} s; see {self.log.name}")

    def call(self, method: str, path: str, body=None, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Token {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            raise SystemExit(f"label-studio-check: error: {method} {path} -> HTTP {e.code}: "
                             f"{e.read()[:500].decode(errors='replace')}") from None
        return payload if raw else (json.loads(payload) if payload else None)

    def status(self, path: str) -> int:
        """HTTP status of an authenticated GET of ``path``."""
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self, close_log: bool = True) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if close_log:
            self.log.close()


def alframe(python: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run the alframe CLI on a tiny digits experiment with the files oracle under ``out``."""
    args = [python, "-m", "alframe.cli.run", "oracle=files", "loop.initial_size=10", "loop.query_size=5",
            "loop.rounds=1", "seed=0", "trainer.max_epochs=5", f"paths.output_root={out}",
            f"mlflow.tracking_uri=sqlite:///{out}/mlflow.db", *extra]
    r = subprocess.run(args, capture_output=True, text=True, cwd=out)
    if r.returncode != 0:
        raise SystemExit(f"label-studio-check: alframe failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def choice(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options every Label Studio check takes (its description: the first paragraph of ``doc``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--venv", type=Path, default=REPO / ".venv-label-studio", help="Label Studio's own venv")
    ap.add_argument("--python", default=sys.executable, help="Python with alframe installed")
    ap.add_argument("--start-timeout", type=float, default=600, help="seconds to wait for the server")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    return ap


def main() -> int:
    args = arguments(__doc__).parse_args()

    import numpy as np

    from alframe.data.digits import digits
    from alframe.oracles import FilesOracle, LabelRequest
    from alframe.oracles.label_studio import hotkeys, labelling_config
    from alframe.rundir.state import PoolState

    t_start = time.time()
    truth = digits().targets
    exe = install(args.venv)
    version = subprocess.run([str(args.venv / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('label-studio'))"],
                             capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="alframe-ls-check-"))
    out = tmp / "alframe"
    out.mkdir()
    server = LabelStudio(exe, tmp / "label-studio-data", tmp / "label-studio.log")
    passed = False
    try:
        say(f"Starting Label Studio {version} on {server.url} (data in {tmp / 'label-studio-data'}) ...")
        check(True, f"Label Studio {version} answered /health after {server.wait_up(args.start_timeout):.0f} s, "
                    f"bound to 127.0.0.1:{server.port}")

        # --- round 0: alframe writes the batch and waits
        r = alframe(args.python, out)
        run_dirs = sorted(out.glob("runs/*/*/queries/round_0"))
        check(len(run_dirs) == 1 and "Labels needed for round 0" in r.stdout and "README.txt" in r.stdout,
              "alframe stopped for labels; its message points to the round folder's README.txt")
        d0 = run_dirs[0]
        queries = d0.parent
        readme = (d0 / "README.txt").read_text()
        check("LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true" in readme and str(queries) in readme,
              "README.txt gives the env var and the Local Files storage path")
        config = (d0 / "label_studio_config.xml").read_text()
        project = server.call("POST", "/api/projects", {"title": "alframe check", "label_config": config})
        pid = project["id"]
        saved = server.call("GET", f"/api/projects/{pid}")["label_config"]
        check(all(f'value="{k}" hotkey="{k}"' in saved for k in range(10)),
              f"project {pid} created with alframe's config; every <Choice> keeps its hotkey (class k -> key k)")
        many = labelling_config([f"class {k}" for k in range(47)])  # e.g. EMNIST balanced
        big = server.call("POST", "/api/projects", {"title": "alframe 47 classes", "label_config": many})
        saved = server.call("GET", f"/api/projects/{big['id']}")["label_config"]
        check(all(f'hotkey="{k}"' in saved for k in hotkeys(47) if k) and 'hotkey="shift+q"' in saved,
              "a 47-class config is accepted with its hotkeys (0-9, q w e ..., shift+q ...)")
        first_image = json.loads((d0 / "label_studio_tasks.json").read_text())[0]["data"]["image"]
        code = server.status(first_image)
        check(code != 200, f"without a Local Files storage the image is refused (HTTP {code})")
        storage = server.call("POST", "/api/storages/localfiles",
                              {"project": pid, "path": str(queries), "title": "alframe queries",
                               "use_blob_urls": False})
        check(storage.get("id") is not None, f"Local Files source storage {storage['id']} on {queries}")

        def import_round(d: Path) -> dict[int, dict]:
            tasks = json.loads((d / "label_studio_tasks.json").read_text())
            got = server.call("POST", f"/api/projects/{pid}/import", tasks)
            check(got.get("task_count") == len(tasks), f"imported {len(tasks)} tasks of {d.name}")
            listed = server.call("GET", f"/api/tasks?project={pid}&page_size=1000&fields=all")
            listed = listed["tasks"] if isinstance(listed, dict) else listed
            mine = {int(t["data"]["index"]): t for t in listed if t["data"].get("round") == tasks[0]["data"]["round"]}
            img = server.call("GET", tasks[0]["data"]["image"], raw=True)
            check(img[:8] == b"\x89PNG\r\n\x1a\n", f"Label Studio serves the task image {tasks[0]['data']['image']}")
            return mine

        tasks0 = import_round(d0)
        idx0 = sorted(tasks0)
        skip_i, relabel_i, edit_i = idx0[0], idx0[1], idx0[2]
        wrong = {i: str((int(truth[i]) + 1) % 10) for i in idx0}
        for i in idx0:
            tid = tasks0[i]["id"]
            if i == skip_i:
                server.call("POST", f"/api/tasks/{tid}/annotations", {"result": [], "was_cancelled": True})
                continue
            first = server.call("POST", f"/api/tasks/{tid}/annotations",
                                {"result": choice(wrong[i] if i in (relabel_i, edit_i) else str(truth[i]))})
            if i == relabel_i:
                time.sleep(0.05)
                server.call("POST", f"/api/tasks/{tid}/annotations", {"result": choice(str(truth[i]))})
            elif i == edit_i:
                time.sleep(0.05)
                server.call("PATCH", f"/api/annotations/{first['id']}", {"result": choice(str(truth[i]))})
        check(True, f"annotated round 0: {skip_i} skipped (Skip = cancelled annotation), {relabel_i} labelled "
                    f"{wrong[relabel_i]} then again {truth[relabel_i]}, {edit_i} labelled {wrong[edit_i]} "
                    f"then edited to {truth[edit_i]}, the other 7 their true digit")
        exports = {}
        for fmt in ("JSON", "JSON_MIN"):
            exports[fmt] = server.call("GET", f"/api/projects/{pid}/export?exportType={fmt}", raw=True)
            (tmp / f"round0_{fmt}.json").write_bytes(exports[fmt])
        j, jm = json.loads(exports["JSON"]), json.loads(exports["JSON_MIN"])
        cancelled = [t["data"]["index"] for t in j if any(a["was_cancelled"] for a in t["annotations"])]
        check(len(j) == 10 and cancelled == [skip_i],
              f"JSON export: 10 tasks, the skip is a cancelled annotation (index {skip_i})")
        check(len(jm) == 10 and skip_i not in [x["index"] for x in jm]
              and [x["index"] for x in jm].count(relabel_i) == 2,
              f"JSON_MIN export: 10 records, no record for the skip, two for the re-label ({relabel_i})")
        want0 = {i: int(truth[i]) for i in idx0 if i != skip_i}
        probe = FilesOracle()
        probe.setup(digits(), queries.parent)  # the run's own folder: its run id is in every task
        for fmt in ("JSON", "JSON_MIN"):
            res = probe.import_label_studio(tmp / f"round0_{fmt}.json", LabelRequest(round=0, idx=np.array(idx0)))
            got = dict(zip(res.idx.tolist(), res.labels.tolist(), strict=True))
            skip_read = res.info["skipped"] == 1.0 if fmt == "JSON" else res.pending and res.info["skipped"] == 0.0
            check(got == want0 and skip_read, f"{fmt} export imports as 9 true labels (the latest annotation wins) + "
                  + ("1 skip" if fmt == "JSON" else "the skipped task pending (JSON-MIN leaves skips out)"))
        (d0 / "export.json").write_bytes(exports["JSON"])
        r = alframe(args.python, out, "loop.resume=true")
        run_dir = queries.parent
        state = PoolState.load(run_dir)
        labelled = {int(i): int(state.labels[i]) for i in state.labelled_idx}
        check(labelled == want0 and state.pool_mask[skip_i] and "Imported 9 labels" in r.stdout,
              f"alframe loop.resume=true imported round 0 from the JSON export: 9 labels, all the true digit; "
              f"{skip_i} back in the pool")

        # --- round 1: the same project, reused; export all tasks as JSON_MIN
        d1 = queries / "round_1"
        check("Labels needed for round 1" in r.stdout and d1.is_dir(), "alframe trained and stopped for round 1")
        tasks1 = import_round(d1)
        check(all(t.get("total_predictions") == 1 for t in tasks1.values()),
              "round-1 tasks carry the model's suggestion as a prediction")
        for i, t in tasks1.items():
            server.call("POST", f"/api/tasks/{t['id']}/annotations", {"result": choice(str(truth[i]))})
        exp = server.call("GET", f"/api/projects/{pid}/export?exportType=JSON_MIN", raw=True)
        check(len(json.loads(exp)) == 15, "JSON_MIN export of the reused project: 15 records (rounds 0 and 1)")
        (d1 / "export.json").write_bytes(exp)
        r = alframe(args.python, out, "loop.resume=true")
        state = PoolState.load(run_dir)
        want = {**want0, **{i: int(truth[i]) for i in tasks1}}
        labelled = {int(i): int(state.labels[i]) for i in state.labelled_idx}
        check(labelled == want and "ignored (same label)" in r.stdout and "Done." in r.stdout,
              f"alframe imported round 1 from the reused project (round-0 rows ignored) and finished: "
              f"{len(want)} labels, all the true digit")

        # --- oracle=label_studio: the loop through the same server, no manual step (scripts/label_studio_live_check.py)
        import label_studio_live_check as live

        say("\noracle=label_studio: 3 rounds, two annotators, alframe killed and Label Studio restarted mid-round ...")
        m = live.run(server, args.python, tmp / "live", truth, check, say)
        say("  seconds from a batch's last answer to the next batch in Label Studio: "
            + ", ".join(f"{v:.1f}" for v in m["latency_s"])
            + "\n  requests per minute while alframe waited, per round: "
            + ", ".join(f"{v:.0f}" for v in m["requests_per_minute"]))
        passed = True
        say(f"\nAll {len(CHECKS)} checks passed in {time.time() - t_start:.0f} s.")
        return 0
    finally:
        server.stop()
        say(f"Label Studio stopped (exit {server.proc.returncode}).")
        if passed and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"Files kept in {tmp} (server log: {server.log.name})")


if __name__ == "__main__":
    sys.exit(main())
