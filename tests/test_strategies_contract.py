"""The query-strategy contract, checked for every ``conf/strategy/*.yaml`` (found automatically).

Each strategy is built with ``hydra.utils.instantiate`` and fed ModelOutputs with only the
fields it declares in ``requires`` for a small synthetic pool, as the loop would (including ``loop.pool_subset``: the
candidates are a strict subset of the pool). It must return ``min(k, M)`` unique indices, all
from the candidates (so none labelled, none held out), the same ones for the same seed, and
must leave its inputs unchanged.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from alframe.rundir.state import PoolState
from alframe.scoring.outputs import KNOWN_REQUIREMENTS, ModelOutputs
from alframe.strategies.base import QueryStrategy
from tests.conftest import CONFIG_DIR

CONFIGS = sorted(Path(CONFIG_DIR, "strategy").glob("*.yaml"))
N, C, D = 120, 4, 6
HELD_OUT = np.arange(100, 120)   # validation split
LABELLED = np.arange(0, 12)


def build(path: Path) -> QueryStrategy:
    cfg = OmegaConf.load(path)
    strategy = instantiate(cfg)
    assert isinstance(strategy, QueryStrategy)
    assert strategy.name == cfg.name == path.stem
    assert set(strategy.requires) <= KNOWN_REQUIREMENTS
    return strategy


def make_state() -> PoolState:
    s = PoolState.create(N, holdout=HELD_OUT)
    s.label(LABELLED, LABELLED % C, round=0)
    return s


def make_outputs(candidates: np.ndarray, mc_samples: int, requires, seed: int = 0) -> ModelOutputs:
    """The fields of ``requires`` filled, as the loop's scoring does (clustered embeddings,
    probabilities and MC samples in float32); the rest stays None, so a strategy that reads
    an output it does not declare fails."""
    g = torch.Generator().manual_seed(seed)
    m = len(candidates)
    centres = torch.randn(3, D, generator=g) * 4
    emb = centres[torch.arange(m) % 3] + torch.randn(m, D, generator=g)
    logits = torch.randn(m, C, generator=g) * 2
    t = max(int(mc_samples or 0), 1)
    mc_logits = logits[:, None, :] + torch.randn(m, t, C, generator=g)
    lab_emb = centres[torch.arange(len(LABELLED)) % 3] + torch.randn(len(LABELLED), D, generator=g)
    full = {"probs": torch.softmax(logits, 1), "mc_probs": torch.softmax(mc_logits, 2), "embeddings": emb,
            "labelled_embeddings": lab_emb}
    return ModelOutputs(idx=np.asarray(candidates, dtype=np.int64),
                        **{k: v for k, v in full.items() if k in set(requires)})


def snapshot(outputs: ModelOutputs, state: PoolState):
    return copy.deepcopy((outputs.__dict__, state.labelled_round, state.labels, state.available, state.progress))


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b


def check(chosen, candidates, state, k):
    chosen = np.asarray(chosen)
    assert chosen.dtype.kind == "i"
    assert len(chosen) == min(k, len(candidates))
    assert len(np.unique(chosen)) == len(chosen), "duplicate indices"
    assert np.isin(chosen, candidates).all(), "index outside the candidates"
    assert not state.labelled_mask[chosen].any(), "already labelled"
    assert state.available[chosen].all(), "held-out index"


def test_configs_found():
    names = {p.stem for p in CONFIGS}
    assert {"random", "bald", "entropy"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("m,k", [(40, 7), (7, 7), (5, 7), (1, 3)], ids=["pool>k", "pool==k", "pool<k", "pool=1"])
def test_strategy_contract(path, m, k):
    strategy = build(path)
    state = make_state()
    pool = state.pool_idx  # 88 samples
    # a strict subset of the pool, as with loop.pool_subset, in a non-sorted order
    candidates = np.random.default_rng(m).choice(pool, size=m, replace=False)
    outputs = make_outputs(candidates, strategy.mc_samples, strategy.requires)
    before = snapshot(outputs, state)
    first = strategy.query(outputs, k, np.random.default_rng(123))
    check(first, candidates, state, k)
    assert_same(snapshot(outputs, state), before)  # inputs not modified
    again = build(path).query(outputs, k, np.random.default_rng(123))
    assert np.asarray(first).tolist() == np.asarray(again).tolist(), "not deterministic under a seed"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_strategy_with_empty_labelled_set(path):
    """Round 0 with no labels (cold start): diversity strategies must still work."""
    strategy = build(path)
    state = PoolState.create(N, holdout=HELD_OUT)
    candidates = state.pool_idx[::3]
    outputs = make_outputs(candidates, strategy.mc_samples, strategy.requires)
    if "labelled_embeddings" in strategy.requires:
        outputs.labelled_embeddings = torch.zeros(0, D)
    check(strategy.query(outputs, 5, np.random.default_rng(0)), candidates, state, 5)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_strategy_rejects_bad_k(path):
    strategy = build(path)
    state = make_state()
    outputs = make_outputs(state.pool_idx[:10], strategy.mc_samples, strategy.requires)
    with pytest.raises(ValueError, match="k"):
        strategy.query(outputs, 0, np.random.default_rng(0))
