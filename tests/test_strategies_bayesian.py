"""Known answers for the MC-dropout strategies: BALD, variation ratios, mean STD, MC entropy."""

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from alframe.rundir.state import PoolState
from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.bayesian import BALD, MCEntropy, MeanSTD, VariationRatios, mc_mutual_information
from tests.conftest import CONFIG_DIR

MC_CLASSES = [BALD, VariationRatios, MeanSTD, MCEntropy]


def state(n=50):
    s = PoolState.create(n)
    s.label(np.array([0, 1]), np.array([0, 1]), round=0)
    return s


def out(mc):
    return ModelOutputs(idx=np.arange(10, 10 + mc.shape[0]), mc_probs=mc)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bald_is_zero_when_all_samples_agree(dtype):
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64) * 3, dim=1).to(dtype)
    mc = p[:, None, :].expand(6, 20, 5).contiguous()
    scores = BALD().score(out(mc))
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, 0.0, atol=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scores_finite_with_exact_zero_one_probabilities(dtype):
    # sample 0: all passes certain of class 0; sample 1: half the passes say 0, half say 1
    mc = torch.zeros(3, 4, 3, dtype=dtype)
    mc[0, :, 0] = 1
    mc[1, :2, 0] = 1
    mc[1, 2:, 1] = 1
    mc[2, :, :] = 1 / 3  # uniform, identical passes
    for cls in MC_CLASSES:
        s = cls(mc_samples=4).score(out(mc))
        assert np.isfinite(s).all(), cls
    bald = BALD().score(out(mc))
    np.testing.assert_allclose(bald, [0.0, math.log(2), 0.0], atol=1e-7)
    np.testing.assert_allclose(MCEntropy().score(out(mc)), [0.0, math.log(2), math.log(3)], atol=1e-6)
    np.testing.assert_allclose(VariationRatios().score(out(mc)), [0.0, 0.5, 0.0])
    # mean std: class 0 and 1 of sample 1 have std 0.5 each, class 2 has 0 -> mean 1/3
    np.testing.assert_allclose(MeanSTD().score(out(mc)), [0.0, 1 / 3, 0.0], atol=1e-7)


def test_bald_known_value_and_ranking():
    # two passes of a binary prediction: p=(a, 1-a) and (b, 1-b)
    a, b = 0.9, 0.2
    mc = torch.tensor([[[a, 1 - a], [b, 1 - b]], [[0.5, 0.5], [0.5, 0.5]]], dtype=torch.float64)

    def h(q):
        return -(q * math.log(q) + (1 - q) * math.log(1 - q))
    expect = h((a + b) / 2) - (h(a) + h(b)) / 2
    np.testing.assert_allclose(BALD().score(out(mc)), [expect, 0.0], rtol=1e-12)
    # BALD prefers disagreement, MC entropy prefers the uniform (but agreeing) prediction
    assert BALD().query(out(mc), 1, np.random.default_rng(0)).tolist() == [10]
    assert MCEntropy().query(out(mc), 1, np.random.default_rng(0)).tolist() == [11]


def test_mutual_information_matches_definition_on_random_input():
    g = torch.Generator().manual_seed(1)
    mc = torch.softmax(torch.randn(30, 7, 4, generator=g, dtype=torch.float64), dim=2)
    mean = mc.mean(1)
    ref = (-(mean * mean.log()).sum(1) + (mc * mc.log()).sum(2).mean(1))
    np.testing.assert_allclose(mc_mutual_information(mc).numpy(), ref.numpy(), rtol=1e-10)
    assert (mc_mutual_information(mc) >= 0).all()
    # variation ratios from the votes, by hand
    votes = mc.argmax(2).numpy()
    ref_vr = [1 - np.bincount(v, minlength=4).max() / 7 for v in votes]
    np.testing.assert_allclose(VariationRatios().score(out(mc)), ref_vr)
    ref_std = mc.std(dim=1, unbiased=False).mean(1).numpy()
    np.testing.assert_allclose(MeanSTD().score(out(mc)), ref_std, rtol=1e-9)


def test_inputs_unchanged_and_deterministic():
    g = torch.Generator().manual_seed(2)
    mc = torch.softmax(torch.randn(12, 5, 3, generator=g), dim=2)
    keep = mc.clone()
    for cls in MC_CLASSES:
        a = cls().query(out(mc), 4, np.random.default_rng(0))
        b = cls().query(out(mc), 4, np.random.default_rng(99))
        assert a.tolist() == b.tolist()
        assert torch.equal(mc, keep)


@pytest.mark.parametrize("name,cls", [("bald", BALD), ("variation_ratios", VariationRatios),
                                      ("mean_std", MeanSTD), ("mc_entropy", MCEntropy)])
def test_config_exposes_mc_samples(name, cls):
    cfg = OmegaConf.load(f"{CONFIG_DIR}/strategy/{name}.yaml")
    s = instantiate(cfg)
    assert type(s) is cls and s.name == name
    assert s.mc_samples == 20 and s.requires == frozenset({"mc_probs"})
    cfg.mc_samples = 7
    assert instantiate(cfg).mc_samples == 7


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_mc_samples_rejected(bad):
    with pytest.raises(ValueError, match="mc_samples"):
        BALD(mc_samples=bad)
