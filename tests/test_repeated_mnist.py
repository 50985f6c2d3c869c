"""Repeated MNIST (Kirsch et al. 2019) as a dataset option of the MNIST family: tiny IDX files
written here, loaded through the real config and torchvision reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alframe.errors import ConfigError

from .helpers import load, write_mnist_like


def test_repeated_mnist_has_three_noisy_copies_of_each_pool_image(tmp_path):
    write_mnist_like(tmp_path / "data", n_train=120, n_test=40)
    plain = load(tmp_path, "mnist", tmp_path / "data", "dataset.val_size=20")
    rep = load(tmp_path, "repeated_mnist", tmp_path / "data", "dataset.val_size=20")
    assert rep.name == "repeated_mnist" and rep.extras["repeat"] == 3
    v, n = 20, 100  # validation images, pool images of the plain set
    assert rep.n_train == v + 3 * n and len(rep.test) == 40
    np.testing.assert_array_equal(rep.val_idx, np.arange(v))
    pool_plain = np.setdiff1d(np.arange(120), plain.val_idx)
    x0 = plain.train.x
    # validation first (the same images as the plain split's validation), then 3 copies of the pool
    np.testing.assert_array_equal(rep.targets[:v], plain.targets[plain.val_idx])
    for j in range(3):
        copy = slice(v + j * n, v + (j + 1) * n)
        np.testing.assert_array_equal(rep.targets[copy], plain.targets[pool_plain])
        noise = rep.train.x[copy] - x0[torch.as_tensor(pool_plain)]
        assert float(noise.mean()) == pytest.approx(0.0, abs=0.01)
        assert float(noise.std()) == pytest.approx(0.1, rel=0.03)  # N(0, 0.1) per pixel, normalised units
    noise_v = rep.train.x[:v] - x0[torch.as_tensor(plain.val_idx)]
    assert float(noise_v.std()) == pytest.approx(0.1, rel=0.05)
    # each copy has its own noise: copies are near but never equal
    a, b = rep.train.x[v], rep.train.x[v + n]
    assert not torch.equal(a, b) and float((a - b).std()) == pytest.approx(0.1 * 2 ** 0.5, rel=0.1)
    # the test set and the normalisation are those of plain MNIST
    torch.testing.assert_close(rep.test.x, plain.test.x)
    assert rep.extras["mean"] == plain.extras["mean"]
    # seeded: the same noise again; another split seed, other noise
    again = load(tmp_path, "repeated_mnist", tmp_path / "data", "dataset.val_size=20")
    assert torch.equal(again.train.x, rep.train.x) and again.fingerprint == rep.fingerprint
    assert rep.fingerprint != plain.fingerprint


def test_repeat_option_on_another_mnist_family_set_and_bad_values(tmp_path):
    write_mnist_like(tmp_path / "data", folder="FashionMNIST", n_train=60, n_test=20)
    data = load(tmp_path, "fashion_mnist", tmp_path / "data", "dataset.val_size=0", "dataset.repeat=2",
                "dataset.repeat_noise_std=0")
    assert data.n_train == 120
    torch.testing.assert_close(data.train.x[:60], data.train.x[60:], rtol=0, atol=0)  # no noise: exact copies
    with pytest.raises(ConfigError, match=r"dataset.repeat=0 is invalid: must be an integer >= 1"):
        load(tmp_path, "fashion_mnist", tmp_path / "data", "dataset.repeat=0")
    with pytest.raises(ConfigError, match=r"dataset.repeat_noise_std=-0.1 is invalid"):
        load(tmp_path, "fashion_mnist", tmp_path / "data", "dataset.repeat=2", "dataset.repeat_noise_std=-0.1")
