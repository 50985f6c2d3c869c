"""Known answers for the batch-aware and diversity strategies: BatchBALD, stochastic (power)
acquisition, Core-set (k-center greedy), k-means, BADGE, TypiClust and Cluster-Margin."""

import itertools
import math

import numpy as np
import pytest
import torch

from alframe.rundir.state import PoolState
from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.batch import BatchBALD, PowerBALD, PowerEntropy
from alframe.strategies.bayesian import BALD, mc_mutual_information
from alframe.strategies.diversity import (
    BADGE,
    CoreSet,
    KMeansSampling,
    TypiClust,
    k_center_greedy,
    min_sq_distances,
)
from alframe.strategies.hybrid import ClusterMargin


def state(n=200):
    return PoolState.create(n)


def rng(seed=0):
    return np.random.default_rng(seed)


def random_mc(m, t, c, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(m, t, c, generator=g, dtype=torch.float64) * 2, dim=2)


def joint_mi(mc, rows):
    """I[y_rows; w] by enumerating every label configuration (brute force)."""
    t, c = mc.shape[1], mc.shape[2]
    h_joint = 0.0
    for config in itertools.product(range(c), repeat=len(rows)):
        pw = torch.ones(t, dtype=torch.float64)
        for r, y in zip(rows, config, strict=True):
            pw = pw * mc[r, :, y]
        q = float(pw.mean())
        h_joint -= q * math.log(q) if q > 0 else 0.0
    cond = sum(float(-(mc[r] * mc[r].log()).sum(1).mean()) for r in rows)
    return h_joint - cond


# ---------------------------------------------------------------- BatchBALD
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batchbald_batch_of_one_is_bald_top1(seed):
    mc = random_mc(40, 8, 4, seed)
    idx = np.random.default_rng(seed).permutation(np.arange(100, 140))  # unsorted absolute indices
    out = ModelOutputs(idx=idx, mc_probs=mc)
    assert BatchBALD().query(out, 1, rng()).tolist() == BALD().query(out, 1, rng()).tolist()


def test_batchbald_greedy_steps_maximise_brute_force_joint_mi():
    mc = random_mc(12, 6, 3, 5)
    out = ModelOutputs(idx=np.arange(12), mc_probs=mc)
    picks = BatchBALD().query(out, 3, rng()).tolist()
    assert picks[0] == int(torch.argmax(mc_mutual_information(mc)))
    for step in (1, 2):
        best = max((j for j in range(12) if j not in picks[:step]), key=lambda j: joint_mi(mc, picks[:step] + [j]))
        assert picks[step] == best


def test_batchbald_skips_identical_copy_for_distinct_informative_point():
    # 4 MC samples. Point A splits them {0,1} vs {2,3} with certainty (BALD = log 2); rows 0 and 1
    # are identical copies of A. Point B splits {0,2} vs {1,3}, a little less sharply; C is dull.
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.95, 0.05], [0.05, 0.95], [0.95, 0.05], [0.05, 0.95]], dtype=torch.float64)
    c = torch.full((4, 2), 0.5, dtype=torch.float64)
    mc = torch.stack([a, a, b, c])
    out = ModelOutputs(idx=np.array([7, 8, 9, 10]), mc_probs=mc)
    bald = BALD().score(out)
    assert bald[0] == bald[1] > bald[2] > bald[3]
    assert BALD().query(out, 2, rng()).tolist() == [7, 8]  # top-k takes both copies
    assert BatchBALD(mc_samples=4).query(out, 2, rng()).tolist() == [7, 9]


def test_batchbald_sampled_joint_entropy_matches_exact():
    mc = random_mc(6, 10, 3, 11)
    exact = BatchBALD(num_samples=10**6)
    sampled = BatchBALD(num_samples=20000)
    gen = torch.Generator().manual_seed(0)
    joint, w, off = torch.ones(1, 10, dtype=torch.float64), None, 0.0
    for i in range(1, 4):
        joint, w, off = exact._joint(mc[:i], joint, w, gen)
    assert w is None and joint.shape == (27, 10)
    h_exact = exact._joint_entropy_with(mc[3:], joint, None)
    j2, w2, off2 = sampled._sampled_joint(mc[:3], gen)
    assert j2.shape == (20000, 10)
    h_sampled = sampled._joint_entropy_with(mc[3:], j2, w2) + off2
    np.testing.assert_allclose(h_sampled.numpy(), h_exact.numpy(), rtol=0.02)


def test_batchbald_sampled_path_in_a_query_is_seeded_and_sane():
    mc = random_mc(30, 10, 5, 3)
    out = ModelOutputs(idx=np.arange(30), mc_probs=mc)
    s = BatchBALD(mc_samples=10, num_samples=30)  # sampled from the 3rd pick on (5^3 > 30)
    a = s.query(out, 6, rng(4))
    assert a.tolist() == s.query(out, 6, rng(4)).tolist()
    assert len(set(a.tolist())) == 6
    assert a[0] == int(torch.argmax(mc_mutual_information(mc)))


def test_batchbald_finite_with_hard_zero_one_probabilities():
    mc = torch.zeros(5, 4, 3, dtype=torch.float32)
    mc[:, :, 0] = 1
    mc[2, 2:, 0], mc[2, 2:, 1] = 0, 1
    mc[4, :, :] = 1 / 3
    out = ModelOutputs(idx=np.arange(5), mc_probs=mc)
    picks = BatchBALD(mc_samples=4, num_samples=4).query(out, 5, rng())
    assert picks[0] == 2 and sorted(picks.tolist()) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- stochastic acquisition
@pytest.mark.parametrize("mode", ["power", "softmax", "softrank"])
def test_stochastic_tends_to_top_k_as_temperature_goes_to_zero(mode):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(200, 5, generator=g), 1)
    out = ModelOutputs(idx=np.arange(1000, 1200), probs=probs)
    from alframe.strategies import Entropy
    top = set(Entropy().query(out, 10, rng()).tolist())
    overlap = {b: np.mean([len(top & set(PowerEntropy(mode=mode, beta=b).query(out, 10, rng(s))
                                                  .tolist())) for s in range(20)]) for b in (0.0, 1.0, 1e9)}
    assert overlap[1e9] == 10  # beta -> inf (temperature -> 0): exactly top-k
    assert overlap[0.0] < overlap[1.0] < 10 or (mode == "softmax" and overlap[0.0] <= overlap[1.0])


def test_power_sampling_probability_follows_score_power():
    # two candidates with BALD-like scores; P(first draw = a) = s_a^beta / (s_a^beta + s_b^beta)
    s = PowerEntropy(beta=2.0)
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    h = -(p * p.log()).sum(1).numpy()
    expect = h[0] ** 2 / (h[0] ** 2 + h[1] ** 2)
    out = ModelOutputs(idx=np.array([3, 4]), probs=p)
    draws = np.array([s.query(out, 1, rng(i))[0] for i in range(3000)])
    freq = np.mean(draws == 3)
    assert abs(freq - expect) < 4 * math.sqrt(expect * (1 - expect) / 3000)


def test_power_bald_uses_bald_and_validates():
    mc = random_mc(50, 6, 3, 2)
    out = ModelOutputs(idx=np.arange(50), mc_probs=mc)
    top = BALD().query(out, 5, rng()).tolist()
    assert PowerBALD(beta=1e9).query(out, 5, rng(3)).tolist() == top
    assert PowerBALD().requires == {"mc_probs"} and PowerEntropy().requires == {"probs"}
    assert PowerEntropy(mc_samples=5).requires == {"mc_probs"}
    with pytest.raises(ValueError, match="mode"):
        PowerBALD(mode="hot")
    with pytest.raises(ValueError, match="beta"):
        PowerBALD(beta=-1)


# ---------------------------------------------------------------- Core-set
def test_k_center_greedy_hand_computed_order():
    labelled = torch.tensor([[0.0, 0.0]])
    pts = torch.tensor([[1.0, 0.0], [4.0, 0.0], [0.0, 3.0], [4.0, 4.0], [-2.0, 0.0]])
    # min distances to (0,0): 1, 4, 3, 5.66, 2 -> D; then B (4 from (0,0)), C (3), E (2), A (1)
    out = ModelOutputs(idx=np.array([20, 21, 22, 23, 24]), embeddings=pts, labelled_embeddings=labelled)
    assert CoreSet().query(out, 5, rng()).tolist() == [23, 21, 22, 24, 20]
    assert CoreSet(chunk_rows=2).query(out, 3, rng()).tolist() == [23, 21, 22]


def test_min_sq_distances_chunked_equals_direct():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(53, 7, generator=g, dtype=torch.float64), torch.randn(31, 7, generator=g, dtype=torch.float64)
    ref = torch.cdist(x, y).square().min(1).values
    torch.testing.assert_close(min_sq_distances(x, y, chunk_rows=8), ref)
    # k-center on duplicates: never the same row twice, duplicates of a centre come last
    x2 = torch.cat([x[:3], x[:3], x[:3]])
    picks = k_center_greedy(x2, torch.zeros(0, 7, dtype=torch.float64), 9, rng())
    assert sorted(picks.tolist()) == list(range(9))
    assert len({tuple(x2[j].tolist()) for j in picks[:3]}) == 3


# ---------------------------------------------------------------- k-means
def test_kmeans_picks_the_member_nearest_each_centre():
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    ring = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.1, 0.1]])  # centre-ish point last
    pts = np.concatenate([c + ring for c in centres])
    out = ModelOutputs(idx=np.arange(50, 65), embeddings=torch.tensor(pts, dtype=torch.float32))
    picks = KMeansSampling().query(out, 3, rng())
    assert sorted(picks.tolist()) == [54, 59, 64]
    # duplicates: 2 distinct points, k = 4 -> empty clusters filled with unused rows
    dup = ModelOutputs(idx=np.arange(6), embeddings=torch.tensor([[0.0, 0]] * 3 + [[5.0, 5]] * 3))
    assert len(set(KMeansSampling().query(dup, 4, rng()).tolist())) == 4


# ---------------------------------------------------------------- BADGE
def explicit_gradients(p, h):
    a = p.clone()
    a[torch.arange(len(p)), p.argmax(1)] -= 1
    return (a[:, :, None] * h[:, None, :]).reshape(len(p), -1)


def test_badge_first_centre_and_d2_sampling_match_explicit_gradients():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(5, 3, generator=g, dtype=torch.float64), 1)
    h = torch.randn(5, 4, generator=g, dtype=torch.float64)
    grads = explicit_gradients(p, h)
    first = int(torch.argmax(grads.norm(dim=1)))
    d2 = (grads - grads[first]).square().sum(1).numpy()
    expect = d2 / d2.sum()
    out = ModelOutputs(idx=np.arange(5), probs=p.float(), embeddings=h.float())
    draws = np.array([BADGE().query(out, 2, rng(i)) for i in range(2000)])
    assert (draws[:, 0] == first).all()
    freq = np.bincount(draws[:, 1], minlength=5) / len(draws)
    assert freq[first] == 0
    assert np.abs(freq - expect).max() < 4 * math.sqrt(0.25 / 2000)


def test_badge_no_duplicates_and_uncovered_cluster_near_origin():
    # cluster B: 30 identical, uncertain rows with a large gradient norm;
    # cluster A: 30 distinct, confident rows: gradients near the origin.
    g = torch.Generator().manual_seed(0)
    pb = torch.tensor([[0.4, 0.35, 0.25]]).expand(30, 3)
    hb = torch.tensor([[3.0, -1.0, 2.0, 0.5]]).expand(30, 4)
    pa = torch.softmax(torch.randn(30, 3, generator=g) * 0.5 + torch.tensor([8.0, 0.0, 0.0]), 1)
    ha = torch.randn(30, 4, generator=g) * 0.3
    out = ModelOutputs(idx=np.arange(100, 160), probs=torch.cat([pb, pa]), embeddings=torch.cat([hb, ha]))
    for seed in range(5):
        picks = BADGE().query(out, 6, rng(seed))
        assert len(set(picks.tolist())) == 6
        assert picks[0] == 100  # first centre from the data: the largest gradient norm (first of the copies)
        assert np.sum(picks < 130) == 1  # one copy of B, then only A: duplicates have distance 0
    # all rows identical: still k distinct indices
    same = ModelOutputs(idx=np.arange(10), probs=pb[:10].clone(), embeddings=hb[:10].clone())
    assert sorted(BADGE().query(same, 10, rng()).tolist()) == list(range(10))


# ---------------------------------------------------------------- TypiClust
def most_typical(pts):
    """Brute force: the row with the smallest mean squared distance to its min(20, n // 2)
    nearest others (the authors' rule for small clusters)."""
    k_nn = min(20, len(pts) // 2)
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return int(np.argmin(np.sort(d2, axis=1)[:, :k_nn].mean(1)))


def test_typiclust_picks_most_typical_point_of_largest_uncovered_cluster():
    gen = np.random.default_rng(0)
    big = gen.normal(size=(40, 2))
    mid = np.array([30.0, 0.0]) + gen.normal(size=(25, 2))
    cov = np.array([0.0, 30.0]) + gen.normal(size=(50, 2))  # the largest blob, but covered by labels
    emb = np.concatenate([big, mid, cov])
    lab = np.array([[0.0, 30.5], [0.5, 30.0]])
    out = ModelOutputs(idx=np.arange(115), embeddings=torch.tensor(emb, dtype=torch.float32),
                       labelled_embeddings=torch.tensor(lab, dtype=torch.float32))
    s = TypiClust(max_clusters=3, normalize=False)  # the blobs' own geometry
    assert s.query(out, 1, rng()).tolist() == [most_typical(big)]
    # k = 2: both uncovered blobs, largest first, before the covered one
    assert s.query(out, 2, rng()).tolist() == [most_typical(big), 40 + most_typical(mid)]
    # k = 4: the third pick comes from the covered blob, the fourth from the big blob again
    picks = s.query(out, 4, rng()).tolist()
    assert picks[2] >= 65 and picks[3] < 40


# ---------------------------------------------------------------- Cluster-Margin
def test_cluster_margin_takes_low_margin_points_across_clusters():
    # 6 low-margin points in two embedding clusters (4 + 2), 20 confident points elsewhere
    low = torch.tensor([[0.5, 0.5]] * 6) + torch.tensor([[0.01, -0.01]]) * torch.arange(6)[:, None]
    high = torch.tensor([[0.99, 0.01]] * 20)
    emb = torch.cat([torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [10.0, 10.0], [10.1, 10.0]]),
                     torch.randn(20, 2, generator=torch.Generator().manual_seed(0))])
    out = ModelOutputs(idx=np.arange(26), probs=torch.cat([low, high]), embeddings=emb)
    for seed in range(5):
        picks = ClusterMargin(margin_factor=3).query(out, 2, rng(seed)).tolist()
        assert picks[0] in (4, 5) and picks[1] in (0, 1, 2, 3)  # smallest cluster first, then the other
    picks = ClusterMargin(margin_factor=1).query(out, 6, rng()).tolist()
    assert sorted(picks) == list(range(6))
    with pytest.raises(ValueError, match="margin_factor"):
        ClusterMargin(margin_factor=0.5)


@pytest.mark.parametrize("seed,n_lab", [(0, 20), (1, 0), (2, 5)])
def test_k_center_pruning_is_exact(seed, n_lab):
    """The triangle-inequality pruning picks exactly what the plain greedy picks (clustered data,
    where pruning skips most points, and isotropic data, where it skips few)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, 16, generator=g) * 6
    x = centres[torch.randint(8, (400,), generator=g)] + torch.randn(400, 16, generator=g)
    lab = x[:n_lab] + 0.1
    for data in (x, torch.randn(300, 16, generator=g)):
        plain = k_center_greedy(data, lab if n_lab else data[:0], 40, rng(seed), prune=False)
        pruned = k_center_greedy(data, lab if n_lab else data[:0], 40, rng(seed), chunk_rows=64)
        assert pruned.tolist() == plain.tolist()
    # and the brute force in float64 agrees on the clustered data
    xd, ld = x.double(), lab.double()
    dist = torch.cdist(xd, ld).min(1).values if n_lab else torch.full((400,), float("inf"), dtype=torch.float64)
    ref = []
    for step in range(40):
        j = int(rng(seed).integers(400)) if (step == 0 and not n_lab) else int(torch.argmax(dist))
        ref.append(j)
        dist = torch.minimum(dist, (xd - xd[j]).norm(dim=1))
        dist[ref] = -float("inf")
    assert k_center_greedy(x, lab if n_lab else x[:0], 40, rng(seed)).tolist() == ref


def test_typiclust_normalize_clusters_directions_not_lengths():
    """``normalize=True`` is TypiClust on the L2-normalised embeddings: the same picks as
    ``normalize=False`` given normalised rows, and two rays of points (one direction each, lengths
    1 to 30) are its two clusters, one pick from each."""
    gen = np.random.default_rng(1)
    length = np.concatenate([np.linspace(1, 30, 30), np.linspace(1, 30, 20)])
    angle = np.concatenate([np.zeros(30), np.full(20, np.pi / 2)]) + gen.normal(0, 0.02, 50)
    emb = np.stack([np.cos(angle), np.sin(angle)], 1) * length[:, None]
    lab = np.zeros((0, 2))
    out = ModelOutputs(idx=np.arange(50), embeddings=torch.tensor(emb, dtype=torch.float32),
                       labelled_embeddings=torch.tensor(lab, dtype=torch.float32))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    out_unit = ModelOutputs(idx=np.arange(50), embeddings=torch.tensor(unit, dtype=torch.float32),
                            labelled_embeddings=torch.tensor(lab, dtype=torch.float32))
    picks = TypiClust().query(out, 2, rng()).tolist()
    assert picks == TypiClust(normalize=False).query(out_unit, 2, rng()).tolist()
    assert sorted(p < 30 for p in picks) == [False, True]  # one per ray, the larger ray first
    assert picks[0] < 30
    with pytest.raises(ValueError, match="normalize must be true or false"):
        TypiClust(normalize="yes")
