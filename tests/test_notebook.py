"""The notebook door: ``alframe.run([...])`` runs one job as the command line does and returns
its per-round history as a DataFrame; ``alframe.report(...)`` returns the report's tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

import alframe
from alframe.errors import ConfigError

from .conftest import FAST


def _overrides(tmp_path, *extra):
    return [*FAST, "trainer.max_epochs=2", f"paths.output_root={tmp_path}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "mlflow.experiment_name=nb", *extra]


def test_run_returns_the_history_mlflow_stored(tmp_path, store):
    res = alframe.run(_overrides(tmp_path, "seed=1"), job_dir=tmp_path / "job")
    assert res.status == "finished"
    assert isinstance(res.history, pd.DataFrame)
    assert res.history["n_labelled"].tolist() == [20, 30, 40]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    stored = sorted((m.step, m.value) for m in client.get_metric_history(res.run_id, "test_accuracy"))
    assert stored == list(zip(res.history["n_labelled"], res.history["test_accuracy"], strict=True))
    assert res.aubc == pytest.approx(res.result.aubc) and (res.run_dir / "pool_state.npz").is_file()


def test_report_compares_strategies_with_paired_intervals(tmp_path, store):
    for strategy in ("random", "margin"):
        for seed in (0, 1):
            alframe.run(_overrides(tmp_path, f"strategy={strategy}", f"seed={seed}", "loop.rounds=1"),
                        job_dir=tmp_path / f"{strategy}{seed}")
    rep = alframe.report("nb", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", out=tmp_path / "report")
    assert sorted(rep.summary["group"]) == ["margin", "random"]
    assert (rep.summary["n_seeds"] == 2).all()
    row = rep.paired[(rep.paired["a"] == "margin") & (rep.paired["b"] == "random")
                     & (rep.paired["metric"] == "aubc")].iloc[0]
    assert row["n_seeds"] == 2 and np.isfinite(row["mean_diff"])
    assert (tmp_path / "report" / "paired.csv").is_file()


def test_bad_override_is_one_line_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"loop.query_size=0 is invalid"):
        alframe.run(_overrides(tmp_path, "loop.query_size=0"), job_dir=tmp_path / "job")
    assert not (tmp_path / "job").exists()
