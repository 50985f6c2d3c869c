"""Known answers for the cold-start strategies: ProbCover (coverage of delta-balls, the purity
rule for delta) and the budget switch (exactly one configured strategy on each side of
``switch_at``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.batch import PowerBALD
from alframe.strategies.bayesian import BALD
from alframe.strategies.coverage import (
    ProbCover,
    ball_graph,
    greedy_cover,
    nearest_other_cluster_sq,
    purity_radius,
)
from alframe.strategies.diversity import TypiClust
from alframe.strategies.epig import EPIG
from alframe.strategies.switch import BudgetSwitch
from alframe.strategies.uncertainty import Margin
from tests.conftest import CONFIG_DIR, compose

SIZES = (30, 20, 10)  # cluster A, B, C
CENTRES = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])


def clusters(seed: int = 0):
    """Three well-separated clusters of 30, 20 and 10 points (radius <= 1, centres 100 apart),
    rows shuffled, with absolute indices in a non-sorted order. Returns ``(outputs, cluster of
    each row, idx)``."""
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(3), SIZES)
    angle, radius = rng.uniform(0, 2 * np.pi, len(cl)), rng.uniform(0, 1, len(cl))
    pts = CENTRES[cl] + np.stack([np.cos(angle), np.sin(angle)], 1) * radius[:, None]
    perm = rng.permutation(len(cl))
    idx = rng.permutation(np.arange(500, 500 + 3 * len(cl), 3))
    out = ModelOutputs(idx=idx.astype(np.int64), embeddings=torch.tensor(pts[perm], dtype=torch.float32),
                       labelled_embeddings=torch.zeros(0, 2))
    return out, cl[perm], idx


def cluster_of(chosen, idx, cl):
    pos = {int(i): r for r, i in enumerate(idx)}
    return [int(cl[pos[int(i)]]) for i in chosen]


def smallest_index_in(c, idx, cl):
    return int(idx[cl == c].min())


# --------------------------------------------------------------------------- ProbCover
@pytest.mark.parametrize("k", [1, 2, 3])
def test_probcover_one_ball_per_cluster_largest_first(k):
    """delta = 5: each ball holds exactly its cluster. Pick j covers the j-th largest cluster
    (every member has the same gain: the smallest index wins); coverage after k picks is
    30, 50, 60 of 60."""
    out, cl, idx = clusters()
    s = ProbCover(delta=5.0, normalize=False)
    chosen = s.query(out, k, np.random.default_rng(0))
    assert chosen.tolist() == [smallest_index_in(c, idx, cl) for c in range(k)]
    assert s.last_info["probcover_coverage"] * 60 == pytest.approx(sum(SIZES[:k]))
    assert s.last_info["probcover_random"] == 0 and s.last_info["probcover_delta"] == 5.0
    assert "probcover_purity" not in s.last_info  # a configured delta: purity not measured


def test_probcover_falls_back_to_random_once_everything_is_covered():
    """After the 3 cluster picks nothing is left to cover: the other 4 are uniform draws
    (with the query's rng) from the remaining candidates, as in the paper."""
    out, cl, idx = clusters()
    s = ProbCover(delta=5.0, normalize=False)
    chosen = s.query(out, 7, np.random.default_rng(42))
    first = [smallest_index_in(c, idx, cl) for c in range(3)]
    assert chosen[:3].tolist() == first
    sorted_idx = np.sort(idx)
    rest = np.setdiff1d(np.arange(60), np.searchsorted(sorted_idx, first))
    expected = sorted_idx[np.random.default_rng(42).choice(rest, size=4, replace=False)]
    assert chosen[3:].tolist() == expected.tolist()
    assert s.last_info["probcover_random"] == 4 and s.last_info["probcover_coverage"] == 1.0


def test_probcover_labelled_set_covers_its_balls():
    """A label at cluster A's centre covers A: the picks are B, then C, then one random."""
    out, cl, idx = clusters()
    out.labelled_embeddings = torch.tensor(CENTRES[:1], dtype=torch.float32)
    s = ProbCover(delta=5.0, normalize=False)
    chosen = s.query(out, 3, np.random.default_rng(0))
    assert chosen[:2].tolist() == [smallest_index_in(1, idx, cl), smallest_index_in(2, idx, cl)]
    assert cluster_of(chosen[2:], idx, cl) and s.last_info["probcover_random"] == 1
    assert s.last_info["probcover_coverage"] == 1.0  # 60 candidates + the labelled point


def test_probcover_purity_rule_with_alpha_one_is_the_smallest_gap():
    """alpha = 1: every ball must be pure, so delta is the smallest distance between points of
    different clusters (k-means with k = 3 finds the clusters); balls that large still cover
    their whole cluster (diameter <= 2), so the picks are those of delta = 5."""
    out, cl, idx = clusters()
    x = out.embeddings.double().numpy()
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    gap = d[cl[:, None] != cl[None, :]].min()
    s = ProbCover(alpha=1.0, n_clusters=3, normalize=False)
    chosen = s.query(out, 3, np.random.default_rng(0))
    assert s.last_info["probcover_delta"] == pytest.approx(gap, rel=1e-4)
    assert 2.0 < s.last_info["probcover_delta"] < 100.0
    assert s.last_info["probcover_purity"] == 1.0
    assert chosen.tolist() == [smallest_index_in(c, idx, cl) for c in range(3)]


def brute_purity(x: np.ndarray, labels: np.ndarray, delta: float) -> float:
    """Fraction of points whose open delta-ball holds only points of their own cluster."""
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return float(np.mean([(labels[d[i] < delta] == labels[i]).all() for i in range(len(x))]))


@pytest.mark.parametrize("alpha", [0.8, 0.95, 1.0])
def test_purity_rule_is_the_largest_delta_with_purity_at_least_alpha(alpha):
    """On overlapping blobs with given cluster labels: purity(delta) >= alpha by brute force
    (float64, exact distances), a radius 0.1% larger has purity < alpha, and the reported
    purity is the brute-force one."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(90) % 3
    x = torch.randn(3, 4, generator=g)[labels] * 2 + torch.randn(90, 4, generator=g)
    x = x - x.mean(0)
    margin = 1e-5 * float(x.square().sum(1).max())
    delta, purity = purity_radius(nearest_other_cluster_sq(x, labels, chunk_rows=16).numpy(), alpha, margin)
    xn, ln = x.double().numpy(), labels.numpy()
    assert purity == pytest.approx(brute_purity(xn, ln, delta)) and purity >= alpha
    assert brute_purity(xn, ln, delta * (1 + 1e-3)) < alpha
    # delta^2: the order statistic of the exact squared nearest-other-cluster distances, less the
    # rounding margin (to within that margin)
    d2 = ((xn[:, None] - xn[None]) ** 2).sum(-1)
    r2 = np.where(ln[:, None] != ln[None, :], d2, np.inf).min(1)
    assert abs(delta ** 2 - (np.sort(r2)[90 - math.ceil(alpha * 90 - 1e-9)] - margin)) < margin


def test_ball_graph_matches_dense_distances():
    """The CSR graph built in 16 x 16 blocks holds exactly the pairs closer than delta (and
    each point itself)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(70, 3, generator=g)
    indptr, indices = ball_graph(x, 0.9, chunk_rows=16)
    d = torch.cdist(x.double(), x.double())
    for i in range(70):
        want = set(torch.nonzero(d[i] < 0.9).squeeze(1).tolist()) | {i}
        assert set(indices[indptr[i]:indptr[i + 1]].tolist()) == want


def test_lazy_greedy_equals_plain_greedy():
    """Lazy greedy = plain greedy max coverage (recomputing every gain each step, ties to the
    smaller row) on random points with a labelled set."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(85, 3)), dtype=torch.float32)
    m, delta = 80, 0.8
    indptr, indices = ball_graph(x, delta, chunk_rows=32)
    picks, covered = greedy_cover(indptr, indices, m, 40)
    d = torch.cdist(x.double(), x.double()).numpy()
    ball = (d < delta) | np.eye(85, dtype=bool)
    cov = ball[m:].any(0)
    want = []
    while len(want) < 40:
        gains = (ball[:m] & ~cov).sum(1)
        gains[want] = -1
        j = int(np.argmax(gains))
        if gains[j] <= 0:
            break
        want.append(j)
        cov |= ball[j]
    assert picks == want and len(want) < 40  # the greedy part ended with everything covered
    assert covered.all() and cov.all()


def test_probcover_is_the_same_in_small_blocks_and_normalises_by_default():
    out, _, _ = clusters(seed=5)
    out.probs = torch.softmax(torch.randn(60, 3, generator=torch.Generator().manual_seed(0)), 1)
    a, b = ProbCover(), ProbCover(chunk_rows=7)
    assert a.requires == {"embeddings", "labelled_embeddings", "probs"}  # k = number of classes = 3
    ca, cb = a.query(out, 8, np.random.default_rng(1)), b.query(out, 8, np.random.default_rng(1))
    assert ca.tolist() == cb.tolist() and a.last_info == b.last_info
    assert a.last_info["probcover_purity"] >= 0.95 and a.last_info["probcover_delta"] <= 2.0  # unit sphere


def test_probcover_requires_and_parameters():
    assert ProbCover(n_clusters=5).requires == {"embeddings", "labelled_embeddings"}
    assert ProbCover(delta=0.3).requires == {"embeddings", "labelled_embeddings"}
    for kwargs, key in [({"delta": 0.0}, "delta"), ({"delta": math.inf}, "delta"), ({"alpha": 0.0}, "alpha"),
                        ({"alpha": 1.5}, "alpha"), ({"n_clusters": 1}, "n_clusters"), ({"max_edges": 0}, "max_edges"),
                        ({"normalize": "yes"}, "normalize")]:
        with pytest.raises(ValueError, match=key):
            ProbCover(**kwargs)


def test_probcover_refuses_a_graph_over_max_edges():
    out, _, _ = clusters()
    with pytest.raises(ValueError, match="max_edges=100 "):
        ProbCover(delta=5.0, normalize=False, max_edges=100).query(out, 2, np.random.default_rng(0))


def test_probcover_identical_points_single_cluster():
    """All points equal: one cluster, any radius is pure (delta infinite, not logged): the
    first pick covers everything, the rest are random."""
    out = ModelOutputs(idx=np.arange(10, 30), embeddings=torch.ones(20, 4), labelled_embeddings=torch.zeros(0, 4),
                       probs=torch.full((20, 3), 1 / 3))
    s = ProbCover()
    chosen = s.query(out, 4, np.random.default_rng(0))
    assert chosen[0] == 10 and len(set(chosen.tolist())) == 4
    assert "probcover_delta" not in s.last_info and s.last_info["probcover_random"] == 3


# --------------------------------------------------------------------------- budget switch
def switch_outputs(m: int = 40, n_lab: int = 6, seed: int = 0) -> ModelOutputs:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(3, 5, generator=g)[torch.arange(m) % 3] * 3 + torch.randn(m, 5, generator=g)
    logits = torch.randn(m, 4, generator=g) * 2
    mc = torch.softmax(logits[:, None] + torch.randn(m, 6, 4, generator=g), 2)
    return ModelOutputs(idx=np.random.default_rng(seed).permutation(np.arange(100, 100 + m)),
                        probs=torch.softmax(logits, 1), mc_probs=mc, embeddings=emb,
                        labelled_embeddings=torch.randn(n_lab, 5, generator=g))


def only(outputs: ModelOutputs, requires) -> ModelOutputs:
    keep = {"idx", "n_labelled", *requires}
    return dataclasses.replace(outputs, **{f.name: None for f in dataclasses.fields(outputs) if f.name not in keep})


@pytest.mark.parametrize("make", [
    lambda: (ProbCover(), Margin()),
    lambda: (TypiClust(), PowerBALD(mc_samples=6)),  # both draw from the rng
], ids=["probcover-margin", "typiclust-powerbald"])
def test_switch_is_exactly_first_below_switch_at_and_then_from_it(make):
    first, then = make()
    s = BudgetSwitch(*make(), switch_at=30)
    assert s.requires == first.requires | then.requires
    out = switch_outputs()
    for n_lab, direct in [(0, first), (29, first), (30, then), (31, then)]:
        out.n_labelled = n_lab
        got = s.query(out, 7, np.random.default_rng(n_lab))
        want = direct.query(only(out, direct.requires), 7, np.random.default_rng(n_lab))
        assert got.tolist() == want.tolist(), n_lab
        assert s.last_info["switch_phase"] == float(direct is then)
    out.n_labelled = 5
    s.query(out, 7, np.random.default_rng(0))
    if isinstance(first, ProbCover):
        assert {"probcover_delta", "probcover_purity"} <= set(s.last_info)  # the active strategy's info


def test_switch_counts_labelled_embeddings_without_n_labelled():
    s = BudgetSwitch(ProbCover(), Margin(), switch_at=6)
    out = switch_outputs(n_lab=6)
    assert out.n_labelled is None
    assert s.query(out, 4, np.random.default_rng(0)).tolist() == \
        Margin().query(out, 4, np.random.default_rng(0)).tolist()
    s = BudgetSwitch(Margin(), BALD(mc_samples=6), switch_at=3)
    out.labelled_embeddings = None
    with pytest.raises(ValueError, match="n_labelled"):
        s.query(out, 4, np.random.default_rng(0))


def test_switch_gives_each_side_only_what_it_declares():
    """The active strategy sees only its own outputs, as the loop would give it alone (reading
    an undeclared output fails)."""
    seen = []

    class Spy(Margin):
        def query(self, outputs, k, rng):
            seen.append({f for f in ("probs", "mc_probs", "embeddings", "labelled_embeddings")
                         if getattr(outputs, f) is not None})
            return super().query(outputs, k, rng)

    out = switch_outputs()
    out.n_labelled = 50
    BudgetSwitch(ProbCover(), Spy(), switch_at=10).query(out, 3, np.random.default_rng(0))
    assert seen == [{"probs"}]
    assert out.embeddings is not None  # the caller's outputs are untouched


def test_switch_mc_settings():
    s = BudgetSwitch(TypiClust(), BALD(mc_samples=12), switch_at=10)
    assert s.mc_samples == 12 and s.consistent_dropout is False
    s.consistent_dropout = True  # as loop.consistent_dropout=true does
    assert s.then.consistent_dropout is True and s.consistent_dropout is True
    assert BudgetSwitch(TypiClust(), Margin(), switch_at=1).mc_samples == 0
    assert BudgetSwitch(BALD(mc_samples=8), EPIG(mc_samples=8), switch_at=1).consistent_dropout is True
    with pytest.raises(ValueError, match="mc_samples"):
        BudgetSwitch(BALD(mc_samples=8), EPIG(mc_samples=20), switch_at=1)
    with pytest.raises(ValueError, match="consistent"):
        BudgetSwitch(BALD(mc_samples=8), EPIG(mc_samples=8), switch_at=1).consistent_dropout = False
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="switch_at"):
            BudgetSwitch(TypiClust(), Margin(), switch_at=bad)
    with pytest.raises(TypeError, match="strategy.then"):
        BudgetSwitch(TypiClust(), {"_target_": "x"}, switch_at=1)


def test_switch_config_instantiates_both_sides_recursively(tmp_path):
    s = instantiate(OmegaConf.load(f"{CONFIG_DIR}/strategy/budget_switch.yaml"))
    assert isinstance(s.first, TypiClust) and isinstance(s.then, Margin) and s.switch_at == 100
    assert s.requires == {"embeddings", "labelled_embeddings", "probs"} and s.mc_samples == 0
    # either side from a strategy file, with its parameters (the documented override)
    cfg = compose(["strategy=budget_switch", "strategy.switch_at=40", "+strategy@strategy.first=typiclust",
                   "+strategy@strategy.then=bald", "strategy.then.mc_samples=5", "strategy.first.k_nn=7"], tmp_path)
    s = instantiate(cfg.strategy)
    assert isinstance(s.first, TypiClust) and isinstance(s.then, BALD) and s.name == "budget_switch"
    assert s.switch_at == 40 and s.mc_samples == 5 and s.then.name == "bald" and s.first.k_nn == 7
    assert s.requires == {"embeddings", "labelled_embeddings", "mc_probs"}
    # or a whole node
    cfg = compose(["strategy=budget_switch", "++strategy.then={_target_: alframe.strategies.epig.EPIG, name: epig}"],
                  tmp_path)
    assert isinstance(instantiate(cfg.strategy).then, EPIG)


def test_switch_in_the_loop_changes_side_at_switch_at(run, monkeypatch):
    """Through the real loop on digits (20 initial labels, 10 per round): round 1 is scored at
    20 labels and queried by TypiClust, round 2 at 30 labels by Margin; the loop fills
    ``ModelOutputs.n_labelled``."""
    calls = []
    for cls in (TypiClust, Margin):
        def spy(self, outputs, k, rng, _original=cls.query, _cls=cls):
            calls.append((_cls, outputs.n_labelled))
            return _original(self, outputs, k, rng)
        monkeypatch.setattr(cls, "query", spy)
    res = run("strategy=budget_switch", "strategy.switch_at=30", "loop.rounds=2", "trainer.max_epochs=1")
    assert calls == [(TypiClust, 20), (Margin, 30)]
    assert res.run_dir.is_dir()
