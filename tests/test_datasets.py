"""torchvision benchmarks from tiny copies written in the real on-disk formats (no network).

The images are real: scikit-learn's 8x8 digits scaled up to 28x28 (MNIST family) or 32x32 RGB
(CIFAR, SVHN), written as IDX files, pickled CIFAR batches and SVHN .mat files, then loaded
through alframe's Hydra config with ``dataset.download=false``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alframe.data.base import load_data
from alframe.errors import DatasetError

from .conftest import compose
from .helpers import load, write_cifar, write_mnist_like, write_svhn


def unnormalise(data, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(data.extras["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data.extras["std"]).view(1, -1, 1, 1)
    return x * std + mean


# --------------------------------------------------------------------------- MNIST family
def test_mnist_loads_idx_files_with_official_test_split_and_validation(tmp_path):
    arrays = write_mnist_like(tmp_path / "data")
    data = load(tmp_path, "mnist", tmp_path / "data", "dataset.val_size=20")
    assert data.name == "mnist" and data.num_classes == 10 and data.class_names == list("0123456789")
    assert data.input_shape == (1, 28, 28)
    assert data.n_train == 120 and len(data.test) == 40  # the official test file, not a split of train
    np.testing.assert_array_equal(data.targets, arrays["y_train"])
    np.testing.assert_array_equal(data.test.y.numpy(), arrays["y_test"])
    # Pixels: the file's bytes / 255, normalised with the train source's mean/std.
    x01 = arrays["x_train"].astype(np.float32) / 255.0
    assert data.extras["mean"][0] == pytest.approx(x01.mean(), rel=1e-5)
    assert data.extras["std"][0] == pytest.approx(x01.std(), rel=1e-4)
    assert float(data.train.x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data.train.x.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(unnormalise(data, data.train.x)[:, 0].numpy(), x01, atol=1e-5)
    np.testing.assert_allclose(unnormalise(data, data.test.x)[:, 0].numpy(),
                               arrays["x_test"].astype(np.float32) / 255.0, atol=1e-5)
    # Validation: 20 stratified, seeded indices of the train source; 2 per class here.
    assert len(data.val_idx) == 20 and len(np.unique(data.val_idx)) == 20
    assert np.bincount(data.targets[data.val_idx], minlength=10).min() >= 1
    again = load(tmp_path, "mnist", tmp_path / "data", "dataset.val_size=20")
    np.testing.assert_array_equal(again.val_idx, data.val_idx)
    assert again.fingerprint == data.fingerprint
    other = load(tmp_path, "mnist", tmp_path / "data", "dataset.val_size=20", "dataset.split_seed=5")
    assert not np.array_equal(other.val_idx, data.val_idx)
    # Batched fetching: one tensor index per batch.
    batch = data.train.__getitems__([3, 7, 11])
    assert len(batch) == 1 and batch[0][0].shape == (3, 1, 28, 28)


def test_mnist_subsets_are_stratified_and_unnormalised_option(tmp_path):
    arrays = write_mnist_like(tmp_path / "data")
    data = load(tmp_path, "mnist", tmp_path / "data", "dataset.val_size=0", "dataset.train_size=50",
                "dataset.test_size=20", "dataset.normalize=false")
    assert data.n_train == 50 and len(data.test) == 20 and len(data.val_idx) == 0
    # Stratified: each class keeps its share of the 120 source samples (within rounding).
    expected = np.bincount(arrays["y_train"], minlength=10) * 50 / 120
    assert np.abs(np.bincount(data.targets, minlength=10) - expected).max() < 1.0
    assert float(data.train.x.min()) >= 0.0 and float(data.train.x.max()) <= 1.0
    assert data.extras["mean"] is None


def test_missing_files_error_names_files_folder_and_how_to_get_them(tmp_path):
    with pytest.raises(DatasetError) as e:
        load(tmp_path, "mnist", tmp_path / "empty")
    msg = str(e.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "dataset.download=true" in msg and "dataset.root" in msg


def test_missing_files_reach_the_command_line_as_a_config_error(tmp_path):
    """The ``alframe`` command prints a ConfigError as one line and exits 2 (no traceback):
    the loop must see the DatasetError itself, not Hydra's InstantiationException around it."""
    from alframe.errors import ConfigError
    from alframe.loop.experiment import Experiment

    cfg = compose(["dataset=mnist", f"dataset.root={tmp_path}/x", "dataset.download=false"], tmp_path / "out")
    with pytest.raises(DatasetError) as e:
        Experiment(cfg, tmp_path / "out" / "job")
    assert isinstance(e.value, ConfigError) and "train-images-idx3-ubyte" in str(e.value)


@pytest.mark.parametrize("name,folder,first_class", [("fashion_mnist", "FashionMNIST", "T-shirt/top"),
                                                     ("kmnist", "KMNIST", "o")])
def test_fashion_and_kmnist_load_their_raw_folders(tmp_path, name, folder, first_class):
    arrays = write_mnist_like(tmp_path / "data", folder=folder)
    data = load(tmp_path, name, tmp_path / "data", "dataset.val_size=10")
    assert data.name == name and data.num_classes == 10 and data.class_names[0] == first_class
    assert data.input_shape == (1, 28, 28) and data.n_train == 120 and len(data.test) == 40
    np.testing.assert_array_equal(data.targets, arrays["y_train"])
    np.testing.assert_allclose(unnormalise(data, data.test.x)[:, 0].numpy(),
                               arrays["x_test"].astype(np.float32) / 255.0, atol=1e-5)


def test_emnist_balanced_split_layout_classes_and_upright_images(tmp_path):
    arrays = write_mnist_like(tmp_path / "data", folder="EMNIST",
                              prefix=("emnist-balanced-train", "emnist-balanced-test"))
    data = load(tmp_path, "emnist", tmp_path / "data", "dataset.val_size=10")
    assert data.num_classes == 47 and len(data.class_names) == 47
    assert data.class_names[:12] == list("0123456789AB") and data.class_names[-1] == "t"
    np.testing.assert_array_equal(data.targets, arrays["y_train"])
    # EMNIST's files store images transposed; alframe returns them upright.
    np.testing.assert_allclose(unnormalise(data, data.train.x)[:, 0].numpy(),
                               arrays["x_train"].transpose(0, 2, 1).astype(np.float32) / 255.0, atol=1e-5)


def test_cifar10_pickled_batches(tmp_path):
    arrays = write_cifar(tmp_path / "data")
    data = load(tmp_path, "cifar10", tmp_path / "data", "dataset.val_size=10", "dataset.verify_checksums=false")
    assert data.input_shape == (3, 32, 32) and data.n_train == 100 and len(data.test) == 40
    assert data.class_names[:3] == ["airplane", "automobile", "bird"] and data.num_classes == 10
    np.testing.assert_array_equal(data.targets, arrays["y_train"])
    np.testing.assert_array_equal(data.test.y.numpy(), arrays["y_test"])
    # Per-channel statistics of the train split, and HWC files -> CHW tensors.
    x01 = arrays["x_train"].astype(np.float64) / 255.0
    np.testing.assert_allclose(data.extras["mean"], x01.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(data.extras["std"], x01.std(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(unnormalise(data, data.train.x).numpy(),
                               x01.transpose(0, 3, 1, 2), atol=1e-5)
    per_channel = data.train.x.transpose(0, 1).reshape(3, -1)
    np.testing.assert_allclose(per_channel.mean(1).numpy(), 0.0, atol=1e-5)


def test_cifar_checksum_failure_is_a_clear_error(tmp_path):
    write_cifar(tmp_path / "data")
    with pytest.raises(DatasetError, match="md5 check.*dataset.verify_checksums=false"):
        load(tmp_path, "cifar10", tmp_path / "data", "dataset.val_size=10")


def test_cifar100_fine_labels_and_meta(tmp_path):
    arrays = write_cifar(tmp_path / "data", hundred=True)
    data = load(tmp_path, "cifar100", tmp_path / "data", "dataset.val_size=10", "dataset.verify_checksums=false")
    assert data.num_classes == 100 and data.class_names[7] == "fine7"
    np.testing.assert_array_equal(data.targets, arrays["y_train"])
    np.testing.assert_allclose(unnormalise(data, data.test.x).numpy(),
                               arrays["x_test"].transpose(0, 3, 1, 2) / 255.0, atol=1e-5)


def test_svhn_mat_files_map_label_10_to_digit_0(tmp_path):
    arrays = write_svhn(tmp_path / "svhn")
    data = load(tmp_path, "svhn", tmp_path / "svhn", "dataset.val_size=10", "dataset.verify_checksums=false")
    assert data.class_names == list("0123456789") and data.input_shape == (3, 32, 32)
    np.testing.assert_array_equal(data.targets, arrays["y_train"])
    assert (data.targets == 0).any() and data.targets.max() <= 9
    np.testing.assert_allclose(unnormalise(data, data.train.x).numpy(),
                               arrays["x_train"].transpose(0, 3, 1, 2) / 255.0, atol=1e-5)


@pytest.mark.parametrize("name,where,first_file", [
    ("fashion_mnist", "FashionMNIST/raw", "train-images-idx3-ubyte"),
    ("kmnist", "KMNIST/raw", "train-images-idx3-ubyte"),
    ("emnist", "EMNIST/raw", "emnist-balanced-train-images-idx3-ubyte"),
    ("cifar10", "cifar-10-batches-py", "data_batch_1"),
    ("cifar100", "cifar-100-python", "train"),
    ("svhn", "", "train_32x32.mat"),
])
def test_every_benchmark_names_its_missing_files(tmp_path, name, where, first_file):
    with pytest.raises(DatasetError) as e:
        load(tmp_path, name, tmp_path / "empty")
    msg = str(e.value)
    assert str((tmp_path / "empty" / where) if where else tmp_path / "empty") in msg
    assert first_file in msg and "dataset.download=false" in msg and "dataset.download=true" in msg


def test_partial_copy_names_only_the_missing_files(tmp_path):
    write_mnist_like(tmp_path / "data")
    (tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"Expected: t10k-labels-idx1-ubyte\. "):
        load(tmp_path, "mnist", tmp_path / "data")


def test_bad_sizes_are_config_errors_naming_the_key(tmp_path):
    from alframe.errors import ConfigError

    write_mnist_like(tmp_path / "data")
    with pytest.raises(ConfigError, match="dataset.val_size"):
        load(tmp_path, "mnist", tmp_path / "data", "dataset.val_size=500")


# --------------------------------------------------------------------------- balanced initial set
@pytest.mark.parametrize("k", [20, 25])
def test_class_balanced_initial_set_has_the_per_class_counts(tmp_path, k):
    from alframe.loop.selection import initial_indices
    from alframe.rundir.state import PoolState

    write_mnist_like(tmp_path / "data", n_train=150)
    cfg = compose(["dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.download=false",
                   "dataset.val_size=20", f"loop.initial_size={k}", "loop.initial_balanced=true"], tmp_path / "out")
    data = load_data(cfg.dataset)
    state = PoolState.create(data.n_train, holdout=data.val_idx)
    idx = initial_indices(cfg, data, state)
    assert len(idx) == k == len(np.unique(idx)) and not np.isin(idx, data.val_idx).any()
    counts = np.bincount(data.targets[idx], minlength=10)
    assert counts.min() >= k // 10  # k // C per class (Gal et al.: 2 per class), the rest at random
    if k == 20:
        assert counts.tolist() == [2] * 10
    np.testing.assert_array_equal(idx, initial_indices(cfg, data, state))  # seeded


def test_failed_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.mnist as tv_mnist

    calls = []

    def offline(url, *args, **kwargs):  # what urllib raises without a network
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError) as e:
        load(tmp_path, "mnist", tmp_path / "data", "dataset.download=true")
    msg = str(e.value)
    assert calls and "downloading failed" in msg and "train-images-idx3-ubyte" in msg
    assert str(tmp_path / "data" / "MNIST" / "raw") in msg
    # Files already on disk are used without any download attempt.
    calls.clear()
    write_mnist_like(tmp_path / "data")
    assert load(tmp_path, "mnist", tmp_path / "data", "dataset.download=true").n_train == 120 and not calls
