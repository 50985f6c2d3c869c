"""The encoder of self-supervised pool features (``ssl=simclr``): a small CNN for small images.

:class:`ConvEncoder` is an :class:`~alframe.models.base.ALNet` whose trunk gives the features
``[B, D]`` and whose head is a single ``nn.Linear(D, C)`` that self-supervised training never
uses. Being an ALNet, its ``state_dict`` is a checkpoint the frozen-feature mode reads as
``model.backbone.name=alframe.models.ssl.ConvEncoder`` with ``model.backbone.checkpoint``: the
backbone's last ``nn.Linear`` (that head) is removed and the features are the trunk's output.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from alframe.models.base import ALNet


class ConvEncoder(ALNet):
    """Conv blocks (3x3 conv, BatchNorm, ReLU) with 2x2 max-pools between them, a last block of
    width ``dim``, global average pooling: features ``[B, dim]``.

    For 28x28 grey digits with the defaults: 32 @ 28x28, pool, 64 @ 14x14, pool, 128 @ 7x7,
    average -> 128 (about 0.1 M parameters, 7 M multiply-adds per image). A pool is skipped once
    the map is smaller than 2 pixels, so 8x8 digits work too. No dropout: the features are a
    fixed function of the image in eval mode.

    Args:
        num_classes: C of the placeholder classifier (removed when the encoder is used frozen).
        input_shape: ``(C_in, H, W)``.
        channels: widths of the blocks before the last one.
        dim: D, width of the last block: the feature size.

    Raises:
        ValueError: ``dim < 1`` or a width < 1.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], channels: Sequence[int] = (32, 64),
                 dim: int = 128):
        widths = [int(c) for c in channels] + [int(dim)]
        if min(widths) < 1:
            raise ValueError(f"ConvEncoder widths must be >= 1, got channels={list(channels)}, dim={dim}")
        layers: list[nn.Module] = []
        c, size = int(input_shape[0]), min(int(input_shape[1]), int(input_shape[2]))
        for i, w in enumerate(widths):
            if i and size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        super().__init__(trunk, nn.Sequential(nn.Linear(widths[-1], num_classes)))
