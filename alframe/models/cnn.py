"""Convolutional networks: a small default CNN and the MNIST networks of the AL papers."""

from __future__ import annotations

import torch
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


def trunk_features(trunk: nn.Module, input_shape: tuple[int, int, int], model: str) -> int:
    """Flattened output size F of ``trunk`` for one input of ``input_shape`` (a dry run).

    Raises:
        ValueError: the input is too small for the architecture (names model and shape).
    """
    was_training = trunk.training
    trunk.eval()
    try:
        with torch.no_grad():
            out = trunk(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        raise ValueError(f"model {model!r} cannot take inputs of shape {tuple(input_shape)} "
                         f"(C, H, W): {e}") from e
    finally:
        trunk.train(was_training)
    return int(out.reshape(1, -1).shape[1])


class GalCNN(ALNet):
    """The MNIST network of Gal, Islam & Ghahramani (2017), "Deep Bayesian Active Learning
    with Image Data" (their Keras ``mnist_cnn`` model).

    conv32-4x4, ReLU, conv32-4x4, ReLU, max-pool 2 (trunk, deterministic) | dropout 0.25,
    dense 128, ReLU, dropout 0.5, dense C (head). The first dropout opens the head, so MC
    dropout samples only the head (exact). For 28x28 inputs F = 32*11*11 = 3872, D = 128.

    Args:
        num_classes: C.
        input_shape: ``(C_in, H, W)``; ``H, W >= 8``.
        channels: filters per conv layer (32 in the paper).
        kernel: conv kernel size (4 in the paper).
        hidden: width D of the dense (embedding) layer (128).
        dropout_in: dropout after pooling (0.25).
        dropout: dropout before the classifier (0.5).

    Raises:
        ValueError: inputs too small for two valid 4x4 convs and a 2x2 pool.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], channels: int = 32,
                 kernel: int = 4, hidden: int = 128, dropout_in: float = 0.25, dropout: float = 0.5):
        c = input_shape[0]
        trunk = nn.Sequential(
            nn.Conv2d(c, channels, kernel), nn.ReLU(),
            nn.Conv2d(channels, channels, kernel), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
        )
        feat = trunk_features(trunk, input_shape, "gal_cnn")
        head = nn.Sequential(nn.Dropout(dropout_in), nn.Linear(feat, hidden), nn.ReLU(),
                             nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        super().__init__(trunk, head)


class BatchBALDCNN(ALNet):
    """The MNIST network of Kirsch, van Amersfoort & Gal (2019), "BatchBALD" (``BayesianNet``
    in their ``mnist_model.py``).

    conv32-5x5, dropout2d, max-pool 2, ReLU, conv64-5x5, dropout2d, max-pool 2, ReLU (trunk) |
    fc128, dropout 0.5, ReLU, fc C (head). As in their code, channel dropout sits inside the
    trunk, so MC dropout samples the whole network (their masks are shared across the pool
    within one sample, "consistent" dropout; here each pass draws fresh masks per sample).
    For 28x28 inputs F = 64*4*4 = 1024, D = 128.

    Args:
        num_classes: C.
        input_shape: ``(C_in, H, W)``; ``H, W >= 16``.
        conv_dropout: ``Dropout2d`` probability after each conv (0.5 in their code; 0 removes
            it, making the trunk deterministic).
        hidden: width D of the fc (embedding) layer (128).
        dropout: dropout after fc128 (0.5).

    Raises:
        ValueError: inputs too small for two valid 5x5 convs and two 2x2 pools.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], conv_dropout: float = 0.5,
                 hidden: int = 128, dropout: float = 0.5):
        c = input_shape[0]

        def drop2d() -> list[nn.Module]:
            return [nn.Dropout2d(conv_dropout)] if conv_dropout > 0 else []

        trunk = nn.Sequential(
            nn.Conv2d(c, 32, 5), *drop2d(), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(32, 64, 5), *drop2d(), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(),
        )
        feat = trunk_features(trunk, input_shape, "batchbald_cnn")
        head = nn.Sequential(nn.Linear(feat, hidden), nn.Dropout(dropout), nn.ReLU(),
                             nn.Linear(hidden, num_classes))
        super().__init__(trunk, head)


class LeNet5(ALNet):
    """LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition"),
    in its common modern form: ReLU and max-pooling, with dropout in the head for MC dropout.

    conv6-5x5 (padding 2), ReLU, max-pool 2, conv16-5x5, ReLU, max-pool 2 (trunk) |
    fc120, ReLU, fc84, ReLU, dropout, fc C (head). For 28x28 inputs F = 16*5*5 = 400, D = 84.

    Args:
        num_classes: C.
        input_shape: ``(C_in, H, W)``; ``H, W >= 12`` with the default padding.
        padding: padding of the first conv (2 turns 28x28 MNIST into LeNet's 32x32 field).
        dropout: dropout before the classifier (0 = none; MC strategies need > 0).

    Raises:
        ValueError: inputs too small for the two 5x5 convs and pools.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], padding: int = 2,
                 dropout: float = 0.5):
        trunk = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, 5, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )
        feat = trunk_features(trunk, input_shape, "lenet5")
        head = nn.Sequential(nn.Linear(feat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                             *([nn.Dropout(dropout)] if dropout > 0 else []), nn.Linear(84, num_classes))
        super().__init__(trunk, head)


class ImageClassifier(ALNet):
    """The three-conv-layer CNN of the classic PyTorch cats-vs-dogs tutorial, for 64x64 RGB.

    Three blocks of conv 3x3 (padding 1), ReLU, 2x2 max-pool with 64, 64 and 128 filters
    (trunk) | [dropout_in], fc 128*8*8 -> 512, ReLU, dropout, fc -> C (head). Input channels
    follow the data; other sizes give F = 128 * (H/8) * (W/8). D = 512.

    Args:
        num_classes: C.
        input_shape: ``(C_in, H, W)``; 64x64 intended, ``H, W >= 8``.
        hidden: width D of the dense layer (512).
        dropout_in: dropout on the flattened features (0 = none).
        dropout: dropout before the classifier.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], hidden: int = 512,
                 dropout_in: float = 0.0, dropout: float = 0.5):
        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

        trunk = nn.Sequential(*block(input_shape[0], 64), *block(64, 64), *block(64, 128), nn.Flatten())
        feat = trunk_features(trunk, input_shape, "image_classifier")
        head = nn.Sequential(*([nn.Dropout(dropout_in)] if dropout_in > 0 else []), nn.Linear(feat, hidden),
                             nn.ReLU(), *([nn.Dropout(dropout)] if dropout > 0 else []),
                             nn.Linear(hidden, num_classes))
        super().__init__(trunk, head)
