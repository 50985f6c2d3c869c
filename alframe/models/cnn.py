"""Small convolutional networks."""

from __future__ import annotations

from torch import nn

from alframe.models.base import ALNet


class SmallCNN(ALNet):
    """Two 3x3 conv blocks (conv-BN-ReLU), 2x2 max-pool, then a dropout MLP head.

    Sized for 8x8 digits and 28x28 MNIST-like images; any ``H, W >= 2`` works.

    Args:
        num_classes: C, number of outputs.
        input_shape: ``(C_in, H, W)`` of one image.
        channels: conv channels.
        hidden: width of the penultimate (embedding) layer D.
        dropout_in: dropout before the first dense layer.
        dropout: dropout before the classifier.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], channels: int = 32,
                 hidden: int = 128, dropout_in: float = 0.25, dropout: float = 0.5):
        c, h, w = input_shape
        trunk = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
        )
        feat = channels * (h // 2) * (w // 2)
        head = nn.Sequential(nn.Dropout(dropout_in), nn.Linear(feat, hidden), nn.ReLU(),
                             nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        super().__init__(trunk, head)
