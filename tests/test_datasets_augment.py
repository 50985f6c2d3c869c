"""Augmentation (``dataset.augment``, torchvision transforms.v2) reaches labelled training
batches only: never pool scoring, validation or test evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from alframe.data.base import LabelledView, load_data, make_loader
from alframe.data.transforms import train_transform

from .conftest import compose
from .helpers import compose_shared, shared_store, write_mnist_like


@pytest.fixture
def store(tmp_path_factory) -> Path:
    """The MLflow store shared by this session's dataset/model end-to-end runs."""
    return shared_store(tmp_path_factory)


class Recorder(torch.nn.Module):
    """Identity transform that records every image it is given (class-level, across instances)."""

    seen: list[torch.Tensor] = []

    def forward(self, x):
        Recorder.seen.append(x.detach().clone())
        return x


def flip_cfg(tmp_path, *extra, store=None):
    write_mnist_like(tmp_path / "data")
    if store is not None:
        return compose_shared(["dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.download=false",
                               "dataset.val_size=20", *extra], tmp_path / "out", store)
    return compose(["dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.download=false",
                    "dataset.val_size=20", *extra], tmp_path / "out")


def test_configured_flip_changes_only_labelled_training_images(tmp_path):
    cfg = flip_cfg(tmp_path, "dataset.augment=[{_target_: torchvision.transforms.v2.RandomHorizontalFlip, p: 1.0}]")
    data = load_data(cfg.dataset)
    assert data.train_transform is not None
    idx = np.array([0, 5, 9])
    view = LabelledView(data.train, idx, data.targets[idx], data.train_transform)
    x_aug, y = next(iter(make_loader(view, batch_size=3)))
    torch.testing.assert_close(x_aug, data.train.x[idx].flip(-1), atol=1e-5, rtol=0)  # exact flip
    assert torch.equal(y, torch.as_tensor(data.targets[idx]))
    # The train source itself (pool scoring), validation and test are untouched.
    plain = load_data(flip_cfg(tmp_path).dataset)
    assert plain.train_transform is None
    torch.testing.assert_close(data.train.x, plain.train.x)
    torch.testing.assert_close(data.test.x, plain.test.x)
    xv, _ = next(iter(make_loader(data.validation_set(), batch_size=20)))
    torch.testing.assert_close(xv, plain.train.x[plain.val_idx])


def test_augmentation_sees_pixel_values_and_a_no_op_round_trips():
    mean, std = [0.2, 0.4, 0.6], [0.3, 0.2, 0.1]
    x01 = torch.rand(3, 8, 8)
    xn = v2.Normalize(mean, std)(x01)
    Recorder.seen = []
    t = train_transform([Recorder()], mean, std)
    out = t(xn)
    torch.testing.assert_close(Recorder.seen[0], x01, atol=1e-5, rtol=0)  # un-normalised for the augmenter
    torch.testing.assert_close(out, xn, atol=1e-5, rtol=0)  # and normalised again
    assert train_transform(None, mean, std) is None and train_transform([], mean, std) is None


def test_flip_crop_rotation_and_colour_jitter_from_configs():
    from omegaconf import OmegaConf

    cfgs = OmegaConf.create([
        {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip"},
        {"_target_": "torchvision.transforms.v2.RandomCrop", "size": 16, "padding": 2},
        {"_target_": "torchvision.transforms.v2.RandomRotation", "degrees": 15},
        {"_target_": "torchvision.transforms.v2.ColorJitter", "brightness": 0.4, "contrast": 0.4},
    ])
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    t = train_transform(cfgs, mean, std)
    torch.manual_seed(0)
    x = v2.Normalize(mean, std)(torch.rand(3, 16, 16))
    outs = torch.stack([t(x) for _ in range(4)])
    assert outs.shape == (4, 3, 16, 16) and torch.isfinite(outs).all()
    assert not torch.allclose(outs[0], outs[1])  # random per call
    # Jitter clamps real pixel values to [0, 1]: after normalisation that is [-2, 2] here.
    assert outs.min() >= -2.0 - 1e-5 and outs.max() <= 2.0 + 1e-5
    with pytest.raises(ValueError, match=r"dataset.augment\[0\] needs a _target_"):
        train_transform([{"p": 0.5}], mean, std)


def test_in_a_run_the_augmentation_touches_exactly_the_labelled_training_samples(tmp_path, store):
    from alframe.loop.experiment import run_experiment

    epochs = 2
    cfg = flip_cfg(tmp_path, "dataset.augment=[{_target_: tests.test_datasets_augment.Recorder}]",
                   f"trainer.max_epochs={epochs}", "loop.initial_size=20", "loop.query_size=10",
                   "loop.rounds=1", "strategy=entropy", store=store)
    Recorder.seen = []
    res = run_experiment(cfg, tmp_path / "out" / "job")
    assert [h["n_labelled"] for h in res.history] == [20, 30]
    # Each labelled sample once per epoch in each round; pool scoring (90+ samples), the
    # validation (20) and test (40) evaluations never call it.
    assert len(Recorder.seen) == epochs * (20 + 30)
    assert all(s.shape == (1, 28, 28) and s.min() >= -1e-5 and s.max() <= 1 + 1e-5 for s in Recorder.seen)
