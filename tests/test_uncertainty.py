"""Known answers for the one-pass uncertainty strategies and the shared top-k selection."""

import numpy as np
import pytest
import torch

from alframe.rundir.state import PoolState
from alframe.scoring.outputs import ModelOutputs
from alframe.strategies import Entropy, LeastConfidence, Margin, RandomSampling, top_k

# Candidates are absolute indices 10..14; rows are their class probabilities.
IDX = np.array([10, 11, 12, 13, 14])
PROBS = torch.tensor(dtype=torch.float64, data=[
    [0.90, 0.05, 0.05],   # confident
    [0.50, 0.45, 0.05],   # small margin (0.05), max prob 0.5
    [0.34, 0.33, 0.33],   # nearly uniform: highest entropy, margin 0.01
    [0.60, 0.20, 0.20],   # margin 0.40, max prob 0.6
    [0.40, 0.40, 0.20],   # margin 0 (tie at top), max prob 0.4
])


def outputs():
    return ModelOutputs(idx=IDX.copy(), probs=PROBS.clone())


def state():
    s = PoolState.create(20)
    s.label(np.array([0, 1]), np.array([0, 1]), round=0)
    return s


def rng():
    return np.random.default_rng(0)


def test_least_confidence_picks_lowest_max_probability():
    np.testing.assert_allclose(LeastConfidence().score(outputs()), [0.1, 0.5, 0.66, 0.4, 0.6])
    assert LeastConfidence().query(outputs(), 2, rng()).tolist() == [12, 14]


def test_margin_picks_smallest_top1_minus_top2_gap():
    np.testing.assert_allclose(Margin().score(outputs()), [-0.85, -0.05, -0.01, -0.40, 0.0], atol=1e-12)
    assert Margin().query(outputs(), 3, rng()).tolist() == [14, 12, 11]


def test_entropy_matches_hand_computed_values():
    p = PROBS.double().numpy()
    expected = -(p * np.log(p)).sum(1)
    np.testing.assert_allclose(Entropy().score(outputs()), expected, rtol=1e-12)
    assert Entropy().query(outputs(), 1, rng()).tolist() == [12]


def test_entropy_is_finite_with_exact_zeros():
    out = ModelOutputs(idx=np.array([0, 1]), probs=torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    np.testing.assert_allclose(Entropy().score(out), [0.0, np.log(2)])


def test_ties_are_broken_by_smaller_index_whatever_the_input_order():
    idx = np.array([7, 3, 5, 1])
    assert top_k(np.array([1.0, 1.0, 2.0, 1.0]), idx, 3).tolist() == [5, 1, 3]
    same = ModelOutputs(idx=np.array([9, 4, 6]), probs=torch.full((3, 4), 0.25))
    assert Entropy().query(same, 2, rng()).tolist() == [4, 6]


def test_top_k_rejects_nan_and_bad_k():
    with pytest.raises(ValueError, match="non-finite.*\\[2\\]"):
        top_k(np.array([0.1, np.nan]), np.array([1, 2]), 1)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        top_k(np.array([0.1]), np.array([1]), 0)


def test_k_larger_than_candidates_returns_all_candidates():
    assert sorted(Margin().query(outputs(), 50, rng()).tolist()) == IDX.tolist()


def test_random_is_seeded_unique_and_within_candidates():
    a = RandomSampling().query(outputs(), 3, np.random.default_rng(5))
    b = RandomSampling().query(outputs(), 3, np.random.default_rng(5))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 3 and set(a.tolist()) <= set(IDX.tolist())


def test_strategy_needs_probs_and_says_so():
    with pytest.raises(ValueError, match="'probs' was not computed"):
        Entropy().score(ModelOutputs(idx=IDX))
