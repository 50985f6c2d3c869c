"""scikit-learn's ``load_digits``: 1,797 real handwritten digits, 8x8 grey, shipped with sklearn."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from alframe.data.base import ALData, TensorImageDataset, stratified_split


def digits(test_size: int | float = 0.25, val_size: int = 100, split_seed: int = 0,
           normalize: bool = True, name: str = "digits") -> ALData:
    """Load the digits data as an :class:`ALData`.

    The 1,797 images are split, stratified and seeded, into a fixed test set and the train
    source; ``val_size`` samples of the train source are held out for validation.

    Args:
        test_size: test samples (int) or fraction of all samples (float in (0, 1)).
        val_size: number of validation samples held out of the train source (0 = none).
        split_seed: seed of the test/validation splits (fixed across experiment seeds so
            that runs with different seeds share one test set).
        normalize: scale pixels (0..16) to mean 0, std 1 using train-source statistics.
        name: dataset name for tags and logs.

    Returns:
        ALData with images ``[1, 8, 8] float32`` and 10 classes.

    Raises:
        ValueError: ``test_size`` or ``val_size`` outside what the data allows.
    """
    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0  # [1797, 1, 8, 8] in [0, 1]
    y = bunch.target.astype(np.int64)
    n = len(y)
    if isinstance(test_size, float) and not 0.0 < test_size < 1.0:
        raise ValueError(f"dataset.test_size must be an int or a fraction in (0, 1), got {test_size}")
    if isinstance(test_size, int) and not 10 <= test_size <= n - 20:
        raise ValueError(f"dataset.test_size must lie in [10, {n - 20}] samples, got {test_size}")
    train_idx, test_idx = stratified_split(y, test_size, split_seed)
    if not 0 <= val_size <= len(train_idx) - 20:
        raise ValueError(f"dataset.val_size must lie in [0, {len(train_idx) - 20}], got {val_size}")
    mean = std = None
    if normalize:
        mean, std = float(x[train_idx].mean()), float(x[train_idx].std())
        x = (x - mean) / std
    x_t = torch.from_numpy(x)
    train = TensorImageDataset(x_t[train_idx], y[train_idx])
    test = TensorImageDataset(x_t[test_idx], y[test_idx])
    y_train = y[train_idx]
    _, val_idx = stratified_split(y_train, val_size, split_seed + 1) if val_size else (None, [])
    return ALData(
        name=name, train=train, test=test, val_idx=np.asarray(val_idx, dtype=np.int64),
        num_classes=10, class_names=[str(c) for c in range(10)], input_shape=(1, 8, 8),
        targets=y_train,
        # preprocessing of pixel values in [0, 1] (= raw value / 16), for exported models
        extras={"mean": None if mean is None else [mean], "std": None if std is None else [std]},
    )
