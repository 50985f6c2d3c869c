"""``oracle=label_studio`` against a real Label Studio (slow): the server in its own venv
``.venv-label-studio/`` on 127.0.0.1, as ``make label-studio-check`` starts it, and a 3-round
digits job that goes on by itself while two annotators answer through the server's API, with a
skip, an answer other than the prediction, a re-label after its round, a kill of alframe followed
by ``loop.resume=true`` and a restart of Label Studio mid-round. Every stored label is checked
against what the annotators gave (scripts/label_studio_live_check.py has the scenario). A second
job's round is labelled in Label Studio's own page in headless chromium with the hotkeys, Skip and
Ctrl+Enter (scripts/label_studio_browser_check.py). Skipped when the SDK is not installed, the Label
Studio venv cannot be created or (the browser test) chromium or Playwright is missing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "scripts"))


def _server(tmp_path: Path, env: dict | None = None):
    """The check script's module and a started Label Studio (skips when it cannot be had)."""
    pytest.importorskip("label_studio_sdk", reason="the SDK is not installed: pip install 'alframe[label-studio]'")
    check_script = _script("label_studio_check")
    try:
        exe = check_script.install(REPO / ".venv-label-studio")
    except (SystemExit, Exception) as e:  # no python3, no registry, a failed install
        pytest.skip(f"cannot create .venv-label-studio/ with Label Studio {check_script.LS_VERSION}: {e}")
    return check_script, check_script.LabelStudio(exe, tmp_path / "label-studio-data",
                                                  tmp_path / "label-studio.log", env=env)


def _scenario(server, tmp_path: Path, run, *extra) -> tuple[list[str], dict]:
    """Start ``server``, run a check script's scenario ``run(server, python, out, truth, check, say,
    *extra)`` on digits with every check an assertion, stop the server; ``(checks made, figures)``."""
    from alframe.data.digits import digits

    checks: list[str] = []

    def check(ok: bool, what: str) -> None:
        checks.append(what)
        assert ok, what

    try:
        server.wait_up(600)
        return checks, run(server, sys.executable, tmp_path / "alframe", digits().targets, check, print, *extra)
    finally:
        server.stop()


@pytest.mark.slow
def test_three_rounds_through_a_real_label_studio(tmp_path):
    _, server = _server(tmp_path)
    live = _script("label_studio_live_check")
    checks, m = _scenario(server, tmp_path, live.run)
    assert len(checks) >= 9
    assert max(m["latency_s"]) < 60  # generous: a loaded machine; the measured figures are in the docs


@pytest.mark.slow
def test_a_round_labelled_with_hotkeys_in_label_studios_own_page(tmp_path):
    pytest.importorskip("label_studio_sdk", reason="the SDK is not installed: pip install 'alframe[label-studio]'")
    browser = _script("label_studio_browser_check")
    why = browser.missing()
    if why:
        pytest.skip(f"the browser check needs chromium and Playwright: {why}")
    _, server = _server(tmp_path)
    checks, m = _scenario(server, tmp_path, browser.run, browser.chromium())
    assert len(checks) >= 15 and len(m["seconds_per_task"]) == browser.QUERY
    print(f"seconds per task in the browser: {', '.join(f'{v:.2f}' for v in m['seconds_per_task'])}")


@pytest.mark.slow
def test_images_are_uploaded_to_a_server_without_local_files(tmp_path, monkeypatch, capsys):
    """A plain ``label-studio start`` (no LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED): images=local_files
    is refused naming the setting; images=auto says so in one line and uploads the images."""
    import threading
    import time

    import numpy as np

    from alframe.data.digits import digits
    from alframe.oracles.base import LabelRequest
    from alframe.oracles.label_studio_live import LabelStudioOracle
    from alframe.oracles.ls_client import LabelStudioError

    check_script, server = _server(tmp_path, env={"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "false"})
    data = digits()
    try:
        server.wait_up(600)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
        with pytest.raises(LabelStudioError, match="start it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true"):
            LabelStudioOracle(url=server.url, images="local_files").setup(data, tmp_path / "a")
        oracle = LabelStudioOracle(url=server.url, poll_s=0.5)
        oracle.setup(data, tmp_path / "b")
        assert "uploading the images instead" in capsys.readouterr().out and oracle.mode == "upload"
        out: dict = {}
        t = threading.Thread(target=lambda: out.setdefault("r", oracle.label(LabelRequest(
            round=0, idx=np.array([5, 9, 11])))), daemon=True)
        t.start()
        t0 = time.monotonic()
        while len(tasks := server.call("GET", f"/api/tasks?project={oracle.pid}&fields=all")["tasks"]) < 3:
            assert time.monotonic() - t0 < 60
            time.sleep(0.2)
        for task in tasks:
            assert task["data"]["image"].startswith("/data/upload/")
            assert server.call("GET", task["data"]["image"], raw=True)[:8] == b"\x89PNG\r\n\x1a\n"
            server.call("POST", f"/api/tasks/{task['id']}/annotations",
                        {"result": check_script.choice(str(data.targets[task["data"]["index"]]))})
        t.join(60)
        assert dict(zip(out["r"].idx.tolist(), out["r"].labels.tolist(), strict=True)) == \
            {i: int(data.targets[i]) for i in (5, 9, 11)}
    finally:
        server.stop()
