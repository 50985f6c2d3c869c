"""New strategy families through the real loop on digits, with ``loop.pool_subset``: the loop
scores only the subset with what the strategy requires (T = ``strategy.mc_samples``) and the
strategy picks only from it."""

from __future__ import annotations

import numpy as np
import pytest
from hydra.utils import get_class

from alframe.rundir.state import PoolState

from .conftest import compose
from .helpers import read_queries


@pytest.mark.parametrize("name,extra", [
    ("bald", ["strategy.mc_samples=5"]),
    ("coreset", []),
    pytest.param("batchbald", ["strategy.mc_samples=4"], marks=pytest.mark.slow),
    pytest.param("badge", [], marks=pytest.mark.slow),
])
def test_strategy_in_loop_honours_pool_subset(name, extra, run, tmp_path, monkeypatch):
    cls = get_class(compose([f"strategy={name}"], tmp_path).strategy._target_)
    calls = []
    original = cls.query

    def spy(self, outputs, k, rng):
        chosen = original(self, outputs, k, rng)
        calls.append((outputs, np.asarray(chosen)))
        return chosen

    monkeypatch.setattr(cls, "query", spy)
    res = run(f"strategy={name}", "loop.pool_subset=60", "loop.rounds=1", *extra)
    assert len(calls) == 1
    outputs, chosen = calls[0]
    labelled = np.flatnonzero(PoolState.load(res.run_dir).labelled_round == 0)  # labelled when round 1 was scored
    assert len(outputs.idx) == 60
    assert set(chosen.tolist()) <= set(outputs.idx.tolist()) and len(set(chosen.tolist())) == 10
    assert not set(outputs.idx.tolist()) & set(labelled.tolist())
    if "mc_probs" in cls.requires:
        t = int(extra[0].split("=")[1])
        assert tuple(outputs.mc_probs.shape) == (60, t, 10)
    if "labelled_embeddings" in cls.requires:
        assert outputs.labelled_embeddings.shape[0] == len(labelled) == 20
    queried = [q["index"] for q in read_queries(res.run_dir) if q["round"] == 1]
    assert sorted(queried) == sorted(chosen.tolist())
