"""A cold start (``loop.initial_by_strategy=true``): the run's strategy chooses the initial set
from fixed features before any model is trained. Known answers through the real loop on real
digits (their 64 pixel values as ``dataset=features``, a linear head: its embeddings are the
features themselves)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from alframe.errors import ConfigError
from alframe.rundir.state import PoolState
from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.coverage import ProbCover
from alframe.strategies.diversity import TypiClust
from alframe.training.seeds import round_rng
from tests.conftest import compose

COLD = ["model=head", "trainer=head", "loop.initial_size=10", "loop.query_size=10", "loop.rounds=1",
        "loop.initial_by_strategy=true"]


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """Digits' pixels as feature files: 1,400 train rows, 397 test rows."""
    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    root = tmp_path_factory.mktemp("feats")
    np.savez(root / "train.npz", x=x[:1400], y=y[:1400])
    np.savez(root / "test.npz", x=x[1400:], y=y[1400:])
    return ["dataset=features", f"dataset.train={root / 'train.npz'}", f"dataset.test={root / 'test.npz'}"], x, y


def round0(run_dir) -> np.ndarray:
    state = PoolState.load(run_dir)
    return np.flatnonzero(state.labelled_round == 0)


def direct(strategy, run_dir, x_train, seed: int = 0) -> np.ndarray:
    """What ``strategy`` picks on the features the head sees (the train rows standardised as the
    run's data gives them), with round 0's generator: the loop must ask for exactly this."""
    state = PoolState.load(run_dir)
    pool = np.flatnonzero(state.available)  # round 0's pool: every available sample
    emb = torch.as_tensor(x_train[pool])
    out = ModelOutputs(idx=pool.astype(np.int64), embeddings=emb, labelled_embeddings=torch.zeros(0, emb.shape[1]),
                       probs=torch.full((len(pool), 10), 0.1), n_labelled=0)
    return np.sort(strategy.query(out, 10, round_rng(seed, 0)))


def test_the_strategy_chooses_the_initial_set_on_the_features(run, features):
    """Exactly TypiClust's pick on the features with round 0's generator of the run's seed."""
    overrides, x, y = features
    seed = 3
    res = run(*overrides, *COLD, "strategy=typiclust", f"seed={seed}")
    chosen = round0(res.run_dir)
    from alframe.data.base import load_data

    data = load_data(compose([*overrides, *COLD], res.run_dir.parent).dataset)
    x_seen = torch.stack([data.train[i][0] for i in range(data.n_train)]).numpy()
    assert np.array_equal(chosen, direct(TypiClust(), res.run_dir, x_seen, seed))
    assert len(chosen) == 10 and PoolState.load(res.run_dir).n_labelled == 20
    # the initial query's timings are logged at step 0
    client = MlflowClient(res.tracking_uri)
    steps = {m.step for m in client.get_metric_history(res.run_id, "query_seconds")}
    assert 0 in steps and 10 in steps


def test_random_and_the_switch_start_cold(run, features, monkeypatch):
    """random draws from round 0's generator; budget_switch asks its first side at 0 labels."""
    overrides = [*features[0], *COLD, "loop.rounds=0"]
    res = run(*overrides, "strategy=random", job="r")
    pool = np.flatnonzero(PoolState.load(res.run_dir).available)
    assert np.array_equal(round0(res.run_dir), np.sort(round_rng(0, 0).choice(pool, size=10, replace=False)))
    calls = []
    original = ProbCover.query
    monkeypatch.setattr(ProbCover, "query", lambda self, o, k, rng: calls.append(o.n_labelled) or original(self, o, k, rng))
    res = run(*overrides, "strategy=budget_switch", "strategy.switch_at=30", "+strategy@strategy.first=probcover", job="s")
    assert calls == [0]
    # what the strategy chose by (ProbCover's radius) is logged with the initial query, at step 0
    delta = MlflowClient(res.tracking_uri).get_metric_history(res.run_id, "probcover_delta")
    assert [m.step for m in delta] == [0] and delta[0].value > 0


@pytest.mark.parametrize("overrides, words", [
    (["strategy=margin"], "strategy=margin needs a trained model's predictions"),
    (["strategy=budget_switch", "strategy.switch_at=0"], "strategy=budget_switch needs a trained model"),
    (["strategy=typiclust", "loop.initial_balanced=true"], "both choose the initial set"),
])
def test_strategies_that_need_a_model_are_refused_before_any_work(run, features, tmp_path, overrides, words):
    with pytest.raises(ConfigError, match=words):
        run(*features[0], *COLD, *overrides)
    assert not (tmp_path / "runs" / "job").exists()
