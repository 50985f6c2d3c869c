"""Sweeps the way a cluster runs them: Hydra's submitit launcher (``submitit_local``, the code
path of ``submitit_slurm``) and an MLflow tracking server (``mlflow server`` over http)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs hydra-submitit-launcher (dev extra)")

BIN = Path(sys.executable).parent
SMALL = ["strategy=random,entropy", "loop.initial_size=10", "loop.query_size=10", "loop.rounds=1",
         "trainer.max_epochs=1"]


def _alframe(tmp_path: Path, *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([str(BIN / "alframe"), "-m", *overrides], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def _check_runs(client: MlflowClient, experiment: str, sweep_dir: Path) -> list:
    """Two FINISHED runs, one per job, with their budget-curve metrics and artifacts."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.tags["strategy"] for r in runs) == ["entropy", "random"]
    assert {r.data.tags["sweep_id"] for r in runs} == {sweep_dir.name}
    for r in runs:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "test_accuracy")] == [10, 20]
        assert 0.0 <= r.data.metrics["final_accuracy"] <= 1.0 and r.data.metrics["final_n_labelled"] == 20
        assert {"config.yaml", "queries.csv", "budget_curve.png", "labelled_set.npz"} <= \
            {a.path for a in client.list_artifacts(r.info.run_id)}
    return runs


@pytest.mark.slow
def test_submitit_local_sweep_end_to_end(tmp_path):
    """Each job runs in its own submitit process (pickled job, .submitit folder with its logs)."""
    _alframe(tmp_path, "hydra/launcher=submitit_local", *SMALL, f"paths.output_root={tmp_path}",
             "mlflow.experiment_name=submitit_test")
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1
    logs = sorted((sweeps[0] / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # one submitit job per sweep job
    assert all("completed successfully" in p.read_text() for p in logs)
    _check_runs(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), "submitit_test", sweeps[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on 127.0.0.1 and a free port: SQLite backend and served artifacts in tmp."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server_artifacts"), "--serve-artifacts"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_two_job_sweep_against_a_tracking_server(tmp_path, mlflow_server):
    out = tmp_path / "work"
    out.mkdir()
    _alframe(out, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SMALL, f"paths.output_root={out}",
             f"mlflow.tracking_uri={mlflow_server}", "mlflow.experiment_name=server_test")
    assert not (out / "mlflow.db").exists()  # nothing went to the default SQLite store
    client = MlflowClient(mlflow_server)
    runs = _check_runs(client, "server_test", next((out / "multirun").iterdir()))
    # artifacts went through the server into its artifact store, and read back over http
    local = client.download_artifacts(runs[0].info.run_id, "queries.csv", str(tmp_path / "dl"))
    rows = Path(local).read_text().strip().splitlines()
    assert rows[0].startswith("round,index,label") and len(rows) == 1 + 20
    assert any((tmp_path / "server_artifacts").rglob("queries.csv"))
