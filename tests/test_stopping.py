"""Stopping criterion of stabilising predictions (Bloodgood & Vijay-Shanker 2009)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from alframe.errors import ConfigError
from alframe.loop.experiment import Experiment
from alframe.loop.stopping import STOP_FILE, StabilisingPredictions, kappa
from alframe.rundir.state import PoolState

from .conftest import REPO, compose


def test_kappa_known_values():
    # observed agreement 0.75, chance agreement 0.5*0.25 + 0.5*0.75 = 0.5 -> (0.75 - 0.5) / 0.5
    assert kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)
    assert kappa([0, 1, 2], [1, 2, 0]) == pytest.approx(-0.5)  # po 0, pe 1/3
    assert kappa([3, 3, 3], [3, 3, 3]) == 1.0  # sklearn gives NaN here (chance agreement 1)
    with pytest.raises(ValueError, match="equal length"):
        kappa([0, 1], [0])


def cfg_with(**loop):
    return OmegaConf.create({"seed": 4, "loop": {"stop_kappa": None, "stop_window": 3, "stop_set_size": 50, **loop}})


def test_stop_set_is_fixed_seeded_and_only_from_the_pool(tmp_path):
    state = PoolState.create(300, holdout=np.arange(0, 300, 3))
    a = StabilisingPredictions(cfg_with(), state, tmp_path / "a")
    b = StabilisingPredictions(cfg_with(), state, tmp_path / "b")
    assert len(a.idx) == 50 and len(np.unique(a.idx)) == 50
    np.testing.assert_array_equal(a.idx, b.idx)
    assert state.available[a.idx].all()  # never a validation sample
    other = StabilisingPredictions(OmegaConf.merge(cfg_with(), {"seed": 5}), state, tmp_path / "c")
    assert not np.array_equal(a.idx, other.idx)
    assert len(StabilisingPredictions(cfg_with(stop_set_size=10_000), state, tmp_path / "d").idx) == 200


def test_window_rule_and_resume_from_file(tmp_path):
    state = PoolState.create(100)
    tmp_path.mkdir(exist_ok=True)
    s = StabilisingPredictions(cfg_with(stop_kappa=0.5, stop_window=2, stop_set_size=4), state, tmp_path)
    assert s.update(0, [0, 0, 1, 1]) == {}
    assert s.update(1, [0, 1, 1, 1]) == {"stop_kappa": pytest.approx(0.5)}
    assert s.reason() is None  # one kappa so far, window 2
    # a resumed run re-trains round 1: its record is replaced, not appended
    s2 = StabilisingPredictions(cfg_with(stop_kappa=0.5, stop_window=2, stop_set_size=4), state, tmp_path)
    np.testing.assert_array_equal(s2.idx, s.idx)
    assert s2.update(1, [0, 1, 1, 1]) == {"stop_kappa": pytest.approx(0.5)} and s2.rounds == [0, 1]
    assert s2.update(2, [0, 1, 1, 1])["stop_kappa"] == 1.0
    assert "for 2 round(s)" in s2.reason() and "0.5000, 1.0000" in s2.reason()
    s2.update(3, [1, 0, 0, 0])  # disagreement: kappa -0.5 breaks the window
    assert s2.reason() is None
    assert StabilisingPredictions(cfg_with(stop_window=2, stop_set_size=4), state, tmp_path).reason() is None


@pytest.mark.parametrize("override, message", [
    ("loop.stop_kappa=1.5", "loop.stop_kappa=1.5 is invalid: must be a kappa in (-1, 1]"),
    ("loop.stop_window=0", "loop.stop_window=0 is invalid: must be an integer >= 1"),
    ("loop.stop_set_size=-5", "loop.stop_set_size=-5 is invalid: must be an integer >= 0"),
])
def test_bad_stop_values_fail_before_training(make_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError) as e:
        Experiment(make_cfg(override), tmp_path / "job")
    assert message in str(e.value)
    assert not (tmp_path / "job" / "last_model.pt").exists()


def test_a_stop_kappa_that_is_not_a_number_is_refused_when_composed(tmp_path):
    """The loop schema (alframe/schema.py) types stop_kappa as a float."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        compose(["loop.stop_kappa=yes"], tmp_path)
    assert "loop.stop_kappa=yes" in str(e.value)


@pytest.mark.slow  # a fresh process imports torch, Lightning and MLflow
def test_stop_kappa_needs_a_stop_set_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alframe.cli.run", f"paths.output_root={tmp_path}",
                           "loop.stop_kappa=0.99", "loop.stop_set_size=0"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("alframe: error: loop.stop_kappa needs a stop set: "
                                                   "loop.stop_set_size=0 is invalid with it, must be an integer >= 1")


def test_loop_logs_kappa_every_round_and_stops_when_stable(run):
    """stop_kappa=-0.99 is met by any two models: the run stops after the window (2 kappas,
    i.e. round 2) instead of running its 6 rounds, logs why, and the logged kappas equal
    Cohen's kappa of the saved stop-set predictions."""
    res = run("loop.rounds=6", "trainer.max_epochs=2", "loop.stop_kappa=-0.99", "loop.stop_window=2",
              "loop.stop_set_size=200")
    assert res.status == "finished"
    assert [h["round"] for h in res.history] == [0, 1, 2]
    client = MlflowClient(res.tracking_uri)
    run_ = client.get_run(res.run_id)
    assert run_.data.tags["stop_reason"].startswith("predictions stabilised")
    logged = sorted(client.get_metric_history(res.run_id, "stop_kappa"), key=lambda m: m.step)
    assert [m.step for m in logged] == [30, 40]
    with np.load(res.run_dir / STOP_FILE) as z:
        preds, idx = z["predictions"], z["idx"]
    assert preds.shape == (3, 200) and len(np.unique(idx)) == 200
    np.testing.assert_allclose([m.value for m in logged], [kappa(preds[0], preds[1]), kappa(preds[1], preds[2])])


def test_extras_can_be_turned_off(run):
    """No stop set, no machine-label evidence, no MLflow model: none of their metrics or files."""
    res = run("loop.rounds=1", "trainer.max_epochs=1", "loop.stop_set_size=0", "loop.machine_label_evidence=false",
              "mlflow.log_model=false")
    client = MlflowClient(res.tracking_uri)
    keys = set(client.get_run(res.run_id).data.metrics)
    assert "test_accuracy" in keys and not {k for k in keys if k.startswith(("stop_kappa", "machine_labels"))}
    assert "model" not in {a.path for a in client.list_artifacts(res.run_id)}
    assert not (res.run_dir / "model").exists() and not (res.run_dir / STOP_FILE).exists()
