"""Preprocessing and augmentation with torchvision ``transforms.v2``.

Images are stored normalised (``(x - mean) / std`` per channel, statistics of the train
source). Augmentation is configured as a list of ``transforms.v2`` transforms and applied
only to labelled training batches (:attr:`ALData.train_transform`): the images are mapped
back to ``[0, 1]`` pixel values, augmented (so colour jitter, crops with fill etc. see real
pixel values), and normalised again. Pool scoring, validation and test never see it.

Example (``dataset.augment`` in a dataset config)::

    augment:
      - _target_: torchvision.transforms.v2.RandomHorizontalFlip
      - _target_: torchvision.transforms.v2.RandomCrop
        size: 32
        padding: 4
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torchvision.transforms import v2


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of images ``x: [N, C, H, W]``.

    Computed in float64 over chunks (uint8 input is scaled to ``[0, 1]``), so large uint8
    arrays are never copied whole.

    Returns:
        ``(mean [C], std [C])`` as lists of floats; a std of 0 is replaced by 1.
    """
    n, c = x.shape[:2]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    for s in range(0, n, chunk):
        b = x[s:s + chunk].to(torch.float64) / scale
        total += b.sum(dim=(0, 2, 3))
        total_sq += (b * b).sum(dim=(0, 2, 3))
    count = n * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    std[std == 0] = 1.0
    return mean.tolist(), std.tolist()


def to_float_normalised(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None,
                        chunk: int = 4096) -> torch.Tensor:
    """uint8 images ``[N, C, H, W]`` -> float32 in ``[0, 1]``, then ``v2.Normalize(mean, std)``.

    Works chunk by chunk so the peak memory is the float32 result plus one chunk.
    ``mean``/``std`` None: no normalisation (values stay in ``[0, 1]``).
    """
    out = torch.empty(x.shape, dtype=torch.float32)
    norm = v2.Normalize(mean=list(mean), std=list(std)) if mean is not None else None
    for s in range(0, len(x), chunk):
        b = x[s:s + chunk].to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x[s:s + chunk].float()
        out[s:s + chunk] = norm(b) if norm is not None else b
    return out


def build_augment(augment) -> list[Callable]:
    """Turn a ``dataset.augment`` value into a list of transform objects.

    Args:
        augment: None, or a list whose items are transform objects (Hydra already
            instantiated them) or configs with ``_target_`` (e.g. from ``_recursive_: false``).

    Raises:
        ValueError: an item that is neither callable nor a config with ``_target_``.
    """
    if augment is None:
        return []
    if isinstance(augment, (DictConfig, dict)) or callable(augment):
        augment = [augment]
    out = []
    for i, item in enumerate(augment):
        if isinstance(item, (DictConfig, dict)):
            if "_target_" not in item:
                raise ValueError(f"dataset.augment[{i}] needs a _target_ (e.g. "
                                 f"torchvision.transforms.v2.RandomHorizontalFlip), got {dict(item)}")
            item = instantiate(item)
        if not callable(item):
            raise ValueError(f"dataset.augment[{i}]={item!r} is not a transform")
        out.append(item)
    return out


def train_transform(augment, mean: Sequence[float] | None, std: Sequence[float] | None) -> Callable | None:
    """The labelled-training-batch transform for normalised images, or None without augmentation.

    Returns ``v2.Compose([un-normalise, *augment, normalise])`` acting on one image
    ``[C, H, W] float``; without ``mean``/``std`` (data kept in ``[0, 1]``) just the augmentation.
    """
    steps = build_augment(augment)
    if not steps:
        return None
    if mean is None:
        return v2.Compose(steps)
    m, s = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    undo = v2.Normalize(mean=(-m / s).tolist(), std=(1.0 / s).tolist())
    return v2.Compose([undo, *steps, v2.Normalize(mean=list(mean), std=list(std))])

