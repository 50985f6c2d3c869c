"""Consistent MC dropout (alframe.scoring.mc.ConsistentMasks, ``strategy.consistent_dropout``):
one dropout mask per MC sample shared by every pool point, seeded, independent of batching;
and the BatchBALD known answer: an exact copy of a chosen point adds zero joint information."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from alframe.data.base import TensorImageDataset
from alframe.models.base import ALNet
from alframe.models.cnn import BatchBALDCNN, GalCNN
from alframe.scoring.mc import ConsistentMasks
from alframe.scoring.pool import compute_outputs
from alframe.strategies.batch import BatchBALD

from .conftest import CONFIG_DIR


class OneHotNet(ALNet):
    """Features x [4] -> dropout 0.5 -> class of the largest surviving feature (classes 0-3), or
    class 4 when none survives. Logit gaps are >= 500, so every MC sample's softmax is exactly
    one-hot in float32: a point's label is a function of the dropout mask."""

    def __init__(self):
        head = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 5))
        with torch.no_grad():
            head[1].weight.zero_()
            head[1].weight[:4, :4] = 1000.0 * torch.eye(4)
            head[1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 500.0]))
        super().__init__(nn.Flatten(), head)


#: A (labels 0, 1, 2 or 4), an exact copy of A, B (2 or 4; shares feature 2 with A), C (3 or 4; independent)
POINTS = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
A, COPY, B, C = 0, 1, 2, 3


def onehot_mc_probs(mask_seed: int | None, t: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    ds = TensorImageDataset(POINTS.reshape(4, 1, 1, 4))
    mc = compute_outputs(OneHotNet(), ds, np.arange(4), {"mc_probs"}, mc_samples=t, mask_seed=mask_seed).mc_probs
    assert set(mc.unique().tolist()) == {0.0, 1.0}  # every sample one-hot, exactly
    return mc


def test_copy_of_a_chosen_point_adds_exactly_zero_joint_information_under_consistent_masks():
    bb = BatchBALD(mc_samples=64)
    mc = onehot_mc_probs(mask_seed=7)
    assert torch.equal(mc[A], mc[COPY])  # same input, same T masks: the same T labels
    i_a = bb.joint_mutual_information(mc[[A]])
    assert i_a > 0.8  # H[y_A] ~ 1.75 bits = 1.21 nats (exact MI: one-hot samples, E_w H = 0)
    assert bb.joint_mutual_information(mc[[A, COPY]]) - i_a == pytest.approx(0.0, abs=1e-12)
    assert bb.joint_mutual_information(mc[[A, C]]) - i_a > 0.4  # an independent point does add
    # BatchBALD never takes both copies while anything informative is left
    picks = BatchBALD(mc_samples=64).query(
        compute_like(mc), 3, np.random.default_rng(0))
    assert picks.tolist() == [A, C, B]


def test_with_masks_per_point_the_copy_looks_informative_and_is_picked():
    mc = onehot_mc_probs(mask_seed=None)
    bb = BatchBALD(mc_samples=64)
    assert not torch.equal(mc[A], mc[COPY])
    assert bb.joint_mutual_information(mc[[A, COPY]]) - bb.joint_mutual_information(mc[[A]]) > 0.8
    picks = bb.query(compute_like(mc), 2, np.random.default_rng(0))
    assert sorted(picks.tolist()) == [A, COPY]


def compute_like(mc: torch.Tensor):
    from alframe.scoring.outputs import ModelOutputs

    return ModelOutputs(idx=np.arange(len(mc)), mc_probs=mc)


@pytest.mark.parametrize("make", [lambda: GalCNN(10, (1, 28, 28)), lambda: BatchBALDCNN(10, (1, 28, 28))],
                         ids=["head_only", "whole_network"])
def test_consistent_masks_are_seeded_shared_and_independent_of_batching(make):
    torch.manual_seed(0)
    net = make()
    x = torch.randn(30, 1, 28, 28)
    x[17] = x[3]  # an exact duplicate, in another batch when batch_size=8
    ds = TensorImageDataset(x)
    idx = np.arange(30)

    def mc(seed, bs):
        return compute_outputs(net, ds, idx, {"mc_probs"}, mc_samples=12, batch_size=bs, mask_seed=seed).mc_probs

    a, b = mc(5, 8), mc(5, 512)
    assert a.shape == (30, 12, 10)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # batching does not change the masks
    torch.testing.assert_close(a[3], a[17], rtol=0, atol=1e-6)  # duplicates get the same T predictions
    assert torch.equal(mc(5, 8), a)  # same seed, same masks
    assert not torch.allclose(mc(6, 8), a)  # another round seed, other masks
    assert not torch.allclose(a[:, 0], a[:, 1])  # MC samples differ from each other
    torch.manual_seed(1)
    per_point = compute_outputs(net, ds, idx, {"mc_probs"}, mc_samples=12, batch_size=8).mc_probs
    assert not torch.allclose(per_point[3], per_point[17])  # default: each point its own masks


def test_mask_rates_and_channel_masks():
    net = BatchBALDCNN(10, (1, 28, 28))
    masks = ConsistentMasks(net, seed=0, t=200)
    conv_drop = next(m for m in net.trunk if isinstance(m, nn.Dropout2d))
    fc_drop = next(m for m in net.head if isinstance(m, nn.Dropout))
    m2d = masks.mask(conv_drop, (32, 12, 12))
    assert m2d.shape == (200, 1, 32, 1, 1)  # whole channels, one mask per MC sample
    assert set(m2d.unique().tolist()) == {0.0, 2.0}  # kept values scaled by 1 / (1 - p)
    assert abs(float((m2d > 0).float().mean()) - 0.5) < 0.02
    m1 = masks.mask(fc_drop, (128,))
    assert m1.shape == (200, 1, 128) and abs(float((m1 > 0).float().mean()) - 0.5) < 0.02
    assert masks.mask(fc_drop, (128,)) is m1  # drawn once per layer


def test_alpha_dropout_is_refused_with_a_clear_message():
    net = ALNet(nn.Flatten(), nn.Sequential(nn.AlphaDropout(0.5), nn.Linear(4, 3)))
    with pytest.raises(ValueError, match=r"the network has \['AlphaDropout'\]: set strategy.consistent_dropout=false"):
        compute_outputs(net, TensorImageDataset(torch.zeros(2, 1, 1, 4)), np.arange(2), {"mc_probs"},
                        mc_samples=3, mask_seed=0)


@pytest.mark.parametrize("name, default", [("batchbald", True), ("bald", False), ("variation_ratios", False),
                                           ("mean_std", False), ("mc_entropy", False), ("power_bald", False),
                                           ("power_entropy", False)])
def test_strategy_configs_default_and_option(name, default):
    cfg = OmegaConf.load(f"{CONFIG_DIR}/strategy/{name}.yaml")
    assert instantiate(cfg).consistent_dropout is default
    cfg.consistent_dropout = not default
    assert instantiate(cfg).consistent_dropout is (not default)
    cfg.consistent_dropout = "yes"
    with pytest.raises(Exception, match="strategy.consistent_dropout='yes' is invalid: must be true or false"):
        instantiate(cfg)


@pytest.mark.parametrize("overrides, consistent", [
    # the strategies' own defaults and settings (also known from instantiating them, above): slow
    pytest.param(["strategy=batchbald"], True, marks=pytest.mark.slow), (["strategy=bald"], False),
    pytest.param(["strategy=bald", "strategy.consistent_dropout=true"], True, marks=pytest.mark.slow),
    # loop.consistent_dropout sets the mask mode of whichever MC strategy a sweep picks
    (["strategy=bald", "loop.consistent_dropout=true"], True),
    (["strategy=batchbald", "loop.consistent_dropout=false"], False),
    (["strategy=bald", "strategy.consistent_dropout=true", "loop.consistent_dropout=false"], False)])
def test_loop_scores_with_the_round_seed_when_consistent(run, monkeypatch, overrides, consistent):
    import alframe.loop.selection as loop

    seen = []
    real = loop.compute_outputs

    def spy(net, dataset, idx, requires, **kwargs):
        if "mc_probs" in requires:  # the pool scoring (other calls: deterministic passes)
            seen.append(kwargs.get("mask_seed"))
        return real(net, dataset, idx, requires, **kwargs)

    monkeypatch.setattr(loop, "compute_outputs", spy)
    res = run(*overrides, "strategy.mc_samples=4", "loop.rounds=2", "trainer.max_epochs=1", "seed=3",
              "loop.pool_subset=200")
    assert res.status == "finished"
    from alframe.training.seeds import SCORE, round_seed

    assert seen == ([round_seed(3, 1, SCORE), round_seed(3, 2, SCORE)] if consistent else [None, None])


def test_loop_consistent_dropout_is_ignored_by_strategies_without_mc_dropout(tmp_path):
    from alframe.loop.experiment import build_experiment

    from .conftest import compose

    exp = build_experiment(compose(["strategy=entropy", "loop.consistent_dropout=true"], tmp_path / "out"),
                           tmp_path / "job")
    assert exp.strategy.consistent_dropout is False  # entropy reads no mc_probs: nothing to share


def test_loop_consistent_dropout_must_be_a_boolean(tmp_path):
    from .conftest import compose

    # the schema (alframe.config.schema.LoopConfig) refuses it while composing, before any data loads
    with pytest.raises(Exception, match="Error merging override loop.consistent_dropout=sometimes") as err:
        compose(["strategy=bald", "loop.consistent_dropout=sometimes"], tmp_path / "out")
    assert "Value 'sometimes' is not a valid bool" in str(err.value.__cause__)
