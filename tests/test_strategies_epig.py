"""Known answers for EPIG (Bickford Smith et al. 2023): the vectorised, chunked estimator against
explicit loops over x*, y, y* and the MC samples, its range, its zeros, and the query."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.bayesian import mc_mutual_information
from alframe.strategies.epig import EPIG, epig_scores
from tests.conftest import CONFIG_DIR


def mc(m: int, k: int, c: int, seed: int, spread: float = 2.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, 1, c, generator=g, dtype=torch.float64) * 2
    return torch.softmax(logits + spread * torch.randn(m, k, c, generator=g, dtype=torch.float64), -1).to(dtype)


def brute_epig(pool: np.ndarray, targ: np.ndarray) -> np.ndarray:
    """EPIG(x) = mean over x* of KL(p(y, y*|x, x*) || p(y|x) p(y*|x*)), with
    p(y, y*|x, x*) = (1/K) sum_k p(y|x, theta_k) p(y*|x*, theta_k): every sum an explicit loop."""
    m, k, c = pool.shape
    out = np.zeros(m)
    for i in range(m):
        total = 0.0
        for t in range(len(targ)):
            for y in range(c):
                for ys in range(c):
                    joint = sum(pool[i, j, y] * targ[t, j, ys] for j in range(k)) / k
                    p_y = sum(pool[i, j, y] for j in range(k)) / k
                    p_ys = sum(targ[t, j, ys] for j in range(k)) / k
                    if joint > 0:
                        total += joint * math.log(joint / (p_y * p_ys))
        out[i] = total / len(targ)
    return out


@pytest.mark.parametrize("m,n_t,k,c,chunk", [(7, 5, 4, 3, 4_000_000), (9, 4, 6, 2, 1), (6, 3, 5, 4, 50)])
def test_epig_matches_brute_force(m, n_t, k, c, chunk):
    """Chunked (down to one candidate per block) and vectorised = the explicit loops."""
    pool, targ = mc(m, k, c, seed=m), mc(n_t, k, c, seed=100 + m)
    got = epig_scores(pool, targ, chunk_elements=chunk)
    assert got.dtype == torch.float64 and got.shape == (m,)
    np.testing.assert_allclose(got.numpy(), brute_epig(pool.numpy(), targ.numpy()), rtol=1e-9, atol=1e-12)


def test_epig_is_non_negative_and_at_most_log_c():
    pool, targ = mc(200, 10, 5, seed=1, spread=4.0), mc(30, 10, 5, seed=2, spread=4.0)
    s = epig_scores(pool.float(), targ.float())
    assert (s >= 0).all() and (s <= math.log(5) + 1e-12).all() and s.max() > 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_epig_is_zero_when_all_samples_agree(dtype):
    """Identical MC samples: the joint factorises, EPIG = 0 (also in float32 inputs, which are
    renormalised in float64)."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(12, 1, 4, generator=g, dtype=torch.float64) * 3, -1).expand(12, 8, 4).to(dtype)
    np.testing.assert_allclose(epig_scores(p, p[:5]).numpy(), 0.0, atol=1e-12)
    # samples agreeing on the candidates only, or on the targets only: still 0
    varied = mc(5, 8, 4, seed=3, dtype=dtype)
    np.testing.assert_allclose(epig_scores(p, varied).numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(epig_scores(varied, p[:3]).numpy(), 0.0, atol=1e-12)


def test_epig_with_the_candidate_as_its_only_target_is_bounded_by_bald():
    """I(y; y*) <= I(y; theta) (data processing): with x* = x, EPIG <= BALD."""
    pool = mc(40, 10, 3, seed=4)
    for i in range(40):
        e = float(epig_scores(pool[i:i + 1], pool[i:i + 1])[0])
        assert e <= float(mc_mutual_information(pool[i:i + 1])[0]) + 1e-12


def test_epig_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same K and C"):
        epig_scores(mc(3, 4, 3, 0), mc(3, 5, 3, 1))
    with pytest.raises(ValueError, match="target"):
        epig_scores(mc(3, 4, 3, 0), mc(3, 4, 3, 1)[:0])


def test_epig_query_is_top_k_over_a_seeded_target_set():
    """The query draws n_target distinct targets from the candidates with the query's rng
    (rows in ascending absolute index) and returns the top k EPIG scores, ties to the smaller
    index."""
    probs = mc(50, 6, 3, seed=5).float()
    idx = np.random.default_rng(0).permutation(np.arange(300, 350))
    s = EPIG(mc_samples=6, n_target=10)
    chosen = s.query(ModelOutputs(idx=idx, mc_probs=probs), 5, np.random.default_rng(7))
    order = np.argsort(idx)
    rows = np.sort(np.random.default_rng(7).choice(50, size=10, replace=False))
    p = probs[torch.as_tensor(order)]
    scores = brute_epig(p.double().numpy(), p[torch.as_tensor(rows)].double().numpy())
    want = idx[order][np.lexsort((idx[order], -scores))[:5]]
    assert chosen.tolist() == want.tolist()
    assert s.last_info["epig_max"] == pytest.approx(scores.max(), rel=1e-6)
    # more targets than candidates: every candidate is a target
    s = EPIG(mc_samples=6, n_target=500)
    assert len(s.query(ModelOutputs(idx=idx[:4], mc_probs=probs[:4]), 2, np.random.default_rng(0))) == 2


def test_epig_requires_consistent_dropout():
    s = instantiate(OmegaConf.load(f"{CONFIG_DIR}/strategy/epig.yaml"))
    assert isinstance(s, EPIG) and s.requires == {"mc_probs"} and s.mc_samples == 20 and s.n_target == 100
    assert s.consistent_dropout is True
    s.consistent_dropout = True  # as loop.consistent_dropout=true does
    with pytest.raises(ValueError, match="consistent"):
        s.consistent_dropout = False  # as loop.consistent_dropout=false would
    with pytest.raises(ValueError, match="consistent"):
        EPIG(consistent_dropout=False)
    for kwargs, key in [({"n_target": 0}, "n_target"), ({"n_target": 2.5}, "n_target"), ({"mc_samples": 0}, "mc_samples"),
                        ({"chunk_elements": 0}, "chunk_elements")]:
        with pytest.raises(ValueError, match=key):
            EPIG(**kwargs)
