"""End-to-end runs on real digits: what MLflow stored, determinism, resume, budget, edge cases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from alframe.loop.experiment import Experiment
from alframe.metrics import aubc
from alframe.rundir.state import PoolState

from .conftest import FAST, compose
from .helpers import read_queries


def history(result, key: str):
    client = MlflowClient(result.tracking_uri)
    return sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)


def test_run_logs_budget_curve_params_tags_and_artifacts(run, tmp_path):
    res = run("strategy=margin", "loop.rounds=3", "trainer.max_epochs=20")
    client = MlflowClient(res.tracking_uri)
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.tags["strategy"] == "margin" and r.data.tags["dataset"] == "digits"
    assert r.data.tags["model"] == "small_cnn" and r.data.tags["seed"] == "0"
    assert r.data.params["loop.query_size"] == "10" and r.data.params["strategy._target_"].endswith("Margin")

    acc = history(res, "test_accuracy")
    assert [m.step for m in acc] == [20, 30, 40, 50]  # step = number of labels
    assert all(0.0 <= m.value <= 1.0 for m in acc)
    assert [m.value for m in history(res, "n_labelled")] == [20, 30, 40, 50]
    for key in ("test_loss", "train_seconds", "val_accuracy"):
        assert len(history(res, key)) == 4
    assert [m.step for m in history(res, "score_seconds")] == [20, 30, 40]
    assert [m.step for m in history(res, "query_seconds")] == [20, 30, 40]
    # Summary metrics agree with the stored curve.
    assert r.data.metrics["final_accuracy"] == pytest.approx(acc[-1].value)
    assert r.data.metrics["aubc"] == pytest.approx(aubc([m.step for m in acc], [m.value for m in acc]))
    assert acc[-1].value > 0.5  # 50 real labels teach a CNN far more than chance (0.1)

    arts = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"config.yaml", "queries.csv", "budget_curve.png", "labelled_set.npz"} <= arts

    rows = read_queries(res.run_dir)
    initial = {q["index"] for q in rows if q["round"] == 0}
    queried = [q["index"] for q in rows if q["round"] > 0]
    assert len(initial) == 20 and len(queried) == 3 * 10 == len(set(queried))
    assert not initial & set(queried)
    state = PoolState.load(res.run_dir)
    assert not set(queried) & set(np.flatnonzero(~state.available).tolist())  # never a validation sample
    assert sorted(q["round"] for q in rows if q["round"] > 0) == sorted([1, 2, 3] * 10)


def test_labels_come_from_the_oracle_not_the_dataset(finished_run):
    state = PoolState.load(finished_run.run_dir)
    from alframe.data.digits import digits
    y = digits().targets
    lab = state.labelled_idx
    np.testing.assert_array_equal(state.labels[lab], y[lab])
    assert (state.labels[state.pool_idx] == -1).all()


def test_same_seed_same_queries_other_seed_other_queries(finished_run, run):
    quick = ("trainer.max_epochs=2", "loop.rounds=2")
    a = read_queries(finished_run.run_dir)  # the session's shared run: seed 3, made earlier, elsewhere
    b = read_queries(run("seed=3", *quick, job="b").run_dir)
    c = read_queries(run("seed=4", *quick, job="c").run_dir)
    assert len(a) == 20 + 2 * 10 and a == b
    assert [q["index"] for q in a] != [q["index"] for q in c]


def test_resume_continues_same_run_and_equals_uninterrupted(tmp_path):
    from alframe.loop.experiment import run_experiment

    quick = [*FAST, "trainer.max_epochs=2"]
    full = run_experiment(compose([*quick, "loop.rounds=3"], tmp_path / "a"), tmp_path / "a" / "job")
    first = run_experiment(compose([*quick, "loop.rounds=1"], tmp_path / "b"), tmp_path / "b" / "job1")
    resumed = run_experiment(compose([*quick, "loop.rounds=3", "loop.resume=true"], tmp_path / "b"),
                             tmp_path / "b" / "job2")
    assert resumed.run_dir == first.run_dir and resumed.run_id == first.run_id
    assert read_queries(resumed.run_dir) == read_queries(full.run_dir)
    steps = [m.step for m in history(resumed, "test_accuracy")]
    assert steps == [20, 30, 40, 50]  # rounds 0-1 from the first process, 2-3 after resuming
    np.testing.assert_allclose([m.value for m in history(resumed, "test_accuracy")],
                               [m.value for m in history(full, "test_accuracy")], atol=1e-6)


def test_resume_by_path_and_refusal_of_other_config(tmp_path):
    from alframe.errors import ConfigError, StateMismatchError
    from alframe.loop.experiment import run_experiment

    first = run_experiment(compose([*FAST, "loop.rounds=0"], tmp_path), tmp_path / "j1")
    again = run_experiment(compose([*FAST, "loop.rounds=1", f"loop.resume={first.run_dir}"], tmp_path),
                           tmp_path / "j2")
    assert again.run_id == first.run_id and again.history[-1]["n_labelled"] == 30
    with pytest.raises(StateMismatchError, match="config_fingerprint"):
        Experiment(compose([*FAST, "strategy=margin", f"loop.resume={first.run_dir}"], tmp_path), tmp_path / "j3")
    with pytest.raises(ConfigError, match="no saved pool state"):
        Experiment(compose([*FAST, f"loop.resume={tmp_path / 'nowhere'}"], tmp_path), tmp_path / "j4")


def test_budget_caps_the_last_query(run):
    res = run("loop.rounds=null", "loop.budget=45")
    assert [h["n_labelled"] for h in res.history] == [20, 30, 40, 45]


def test_small_pool_last_round_takes_what_is_left(run):
    # 57 train-source samples, no validation: 20 initial + 10 + 10 + 10 + 7 and the pool is empty.
    res = run("dataset.test_size=1740", "dataset.val_size=0", "loop.rounds=null", "trainer.max_epochs=2")
    assert [h["n_labelled"] for h in res.history] == [20, 30, 40, 50, 57]
    assert PoolState.load(res.run_dir).n_pool == 0


def test_pool_subset_limits_the_candidates(run):
    res = run("loop.pool_subset=15", "loop.rounds=1")
    assert len([q for q in read_queries(res.run_dir) if q["round"] == 1]) == 10


def test_class_balanced_initial_set(run):
    res = run("loop.initial_balanced=true", "loop.initial_size=20", "loop.rounds=0")
    state = PoolState.load(res.run_dir)
    counts = np.bincount(state.labels[state.labelled_idx], minlength=10)
    assert counts.tolist() == [2] * 10


@pytest.mark.parametrize("override,message", [
    ("loop.query_size=0", "loop.query_size=0 is invalid: must be an integer >= 1"),
    ("loop.rounds=-1", "loop.rounds=-1 is invalid: must be an integer >= 0 or null"),
    ("loop.initial_size=5000", "loop.initial_size=5000 is invalid: must be an integer in [1, 1247]"),
    ("loop.budget=10", "loop.budget=10 is invalid: must be an integer >= loop.initial_size (20)"),
    ("loop.pool_subset=5", "loop.pool_subset=5 is invalid: must be an integer >= loop.query_size (10)"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is invalid"),
])
def test_bad_values_fail_before_training(make_cfg, tmp_path, override, message):
    from alframe.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        Experiment(make_cfg(override), tmp_path / "job")
    assert message in str(e.value)
    assert not (tmp_path / "mlflow.db").exists()  # nothing was started


def test_cli_reports_bad_value_and_unknown_option(tmp_path):
    exe = Path(sys.executable).with_name("alframe")
    bad = subprocess.run([str(exe), "loop.query_size=0", f"paths.output_root={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "alframe: error: loop.query_size=0 is invalid: must be an integer >= 1" in bad.stderr
    unknown = subprocess.run([str(exe), "strategy=nosuch", f"paths.output_root={tmp_path}"],
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode != 0
    assert "nosuch" in unknown.stderr and "entropy" in unknown.stderr and "margin" in unknown.stderr


def test_bad_strategy_parameter_is_a_config_error(make_cfg, tmp_path):
    from alframe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"strategy \(alframe.strategies.batch.PowerBALD\): .*mode.*'bogus'"):
        Experiment(make_cfg("strategy=power_bald", "strategy.mode=bogus"), tmp_path / "job")
