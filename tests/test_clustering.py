"""k-means and k-NN of the clustering strategies (alframe.strategies.clustering) against
scikit-learn's exact Lloyd iterations and plain reference computations, on real digits."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

import alframe.strategies.clustering as clustering
from alframe.strategies.clustering import kmeans, knn_sq_distances, lloyd


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """``[1797, 64] float32`` real handwritten digits, pixel values 0-16."""
    return load_digits().data.astype(np.float32)


def plain_lloyd(x: np.ndarray, init: np.ndarray, n_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Textbook Lloyd: every distance every iteration (float64); stops when nothing changes."""
    x64, c = x.astype(np.float64), init.astype(np.float64)
    a = ((x64[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    for _ in range(n_iter):
        c = np.stack([x64[a == j].mean(0) for j in range(len(c))])
        new = ((x64[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        if (new == a).all():
            break
        a = new
    return a, c


@pytest.mark.parametrize("candidates", [1, 3, 24])
def test_lloyd_assignments_are_those_of_plain_lloyd(digits, candidates):
    # few candidates force the exhaustive re-search of points whose bound fails; the
    # assignments must not depend on it
    rng = np.random.default_rng(0)
    init = digits[rng.choice(len(digits), 40, replace=False)]
    ref_a, ref_c = plain_lloyd(digits, init, 100)
    res = lloyd(digits, init, 100, candidates=candidates)
    np.testing.assert_array_equal(res.labels, ref_a)
    np.testing.assert_allclose(res.centres, ref_c, atol=1e-4)
    np.testing.assert_allclose(res.sq_dist, ((digits - ref_c[ref_a]) ** 2).sum(1), rtol=1e-4, atol=1e-3)


def test_lloyd_matches_scikit_learn_lloyd_from_the_same_centres(digits):
    init = digits[np.random.default_rng(1).choice(len(digits), 10, replace=False)]
    sk = KMeans(10, init=init, n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(digits)
    res = lloyd(digits, init, 300)
    np.testing.assert_array_equal(res.labels, sk.labels_)
    assert res.inertia == pytest.approx(sk.inertia_, rel=1e-5)


def test_lloyd_stops_at_a_fixed_point(digits):
    init = digits[np.random.default_rng(2).choice(len(digits), 25, replace=False)]
    res = lloyd(digits, init, 500)
    again = lloyd(digits, res.centres, 1)  # one more iteration changes nothing
    np.testing.assert_array_equal(again.labels, res.labels)
    np.testing.assert_allclose(again.centres, res.centres, atol=1e-5)
    # and a capped run is a different (earlier) state: the cap is honoured
    assert lloyd(digits, init, 1).inertia > res.inertia


def test_empty_cluster_takes_the_farthest_point():
    x = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0], [50.0, 0.0]], dtype=np.float32)
    init = np.array([[0.0, 0.5], [0.0, 0.5], [10.0, 0.5]], dtype=np.float32)  # twin centres
    res = lloyd(x, init, 10)
    # after the first update one twin has no member and moves to (50, 0), the point farthest from
    # its centre; the clustering then separates the three groups
    assert sorted(np.bincount(res.labels, minlength=3).tolist()) == [1, 2, 2]
    assert res.inertia == pytest.approx(1.0)  # two pairs 1 apart, each 0.5 from its mean
    assert any(np.allclose(c, [50.0, 0.0]) for c in res.centres)


def test_kmeans_inertia_within_one_percent_of_scikit_learn(digits):
    ours = kmeans(digits, 50, 20, np.random.default_rng(0))
    sk = KMeans(50, n_init=1, max_iter=300, random_state=0).fit(digits)
    assert ours.inertia <= 1.01 * sk.inertia_
    assert len(np.unique(ours.labels)) == 50
    np.testing.assert_array_equal(ours.labels, kmeans(digits, 50, 20, np.random.default_rng(0)).labels)  # seeded


def test_kmeans_single_cluster_and_bad_sizes(digits):
    one = kmeans(digits[:100], 1, 5, np.random.default_rng(0))
    np.testing.assert_allclose(one.centres[0], digits[:100].mean(0), rtol=1e-5)
    assert (one.labels == 0).all()
    with pytest.raises(ValueError, match="1 <= k <= number of points \\(100\\), got k=101"):
        kmeans(digits[:100], 101, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_iter=0"):
        kmeans(digits[:100], 3, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="init must be \\[K, 64\\]"):
        lloyd(digits[:100], digits[:3, :10], 5)


@pytest.mark.parametrize("n", [40, 300])
def test_knn_dense_and_faiss_paths_agree_with_brute_force(digits, n, monkeypatch):
    x = np.concatenate([digits[:n], digits[:5]])  # 5 exact duplicates: neighbours at distance 0
    full = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    ref = np.sort(full, axis=1)[:, :7]
    dense = knn_sq_distances(x, 7)
    monkeypatch.setattr(clustering, "DENSE_KNN_ROWS", 0)
    via_faiss = knn_sq_distances(x, 7)
    np.testing.assert_allclose(dense, ref, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(via_faiss, ref, rtol=1e-4, atol=1e-2)
    assert (dense[:5, 0] == 0).all() and (dense[n:, 0] == 0).all()
