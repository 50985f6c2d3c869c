"""torchvision's ResNet-18 as an alframe network (trunk = everything up to global pooling)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from alframe.errors import ConfigError
from alframe.models.base import ALNet


class WeightsUnavailableError(ConfigError):
    """Pretrained weights could not be fetched or read (the message says how to provide them)."""


def _imagenet_state_dict(weights_path: str | None) -> dict[str, torch.Tensor]:
    weights = ResNet18_Weights.IMAGENET1K_V1
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"model.net.weights_path={path} does not exist")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsUnavailableError(f"model.net.weights_path={path} is not a ResNet-18 state dict: {e}") from e
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # URLError, HTTPError, OSError, hash mismatch...
        hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise WeightsUnavailableError(
            f"resnet18 pretrained weights could not be fetched from {weights.url} ({type(e).__name__}: {e}). "
            f"Download that file on a machine with internet and put it at {hub} (or pass "
            f"model.net.weights_path=/path/to/{Path(weights.url).name}), or set model.net.pretrained=false."
        ) from e


class ResNet18(ALNet):
    """ResNet-18 (He et al. 2016) from torchvision, with the CIFAR stem by default.

    CIFAR stem (``cifar_stem=true``, for 32x32 inputs): the first conv is 3x3 stride 1 and the
    max-pool is removed, as in the CIFAR experiments of many AL papers (e.g. Sener & Savarese
    2018; Ash et al. 2020). Trunk: stem, 4 residual stages, global average pool, flatten
    (BatchNorm, no dropout: deterministic in eval). Head: optional dropout, fc 512 -> C.
    D = 512.

    Args:
        num_classes: C.
        input_shape: ``(C_in, H, W)``; input channels follow the data.
        cifar_stem: 3x3 stride-1 first conv without max-pool (else the ImageNet 7x7/2 + pool).
        dropout: dropout before the classifier (0 = none; MC strategies need > 0).
        pretrained: start from torchvision's ImageNet weights (``IMAGENET1K_V1``); off by
            default, since many machines cannot download them. The stem conv is re-initialised
            when it is replaced (CIFAR stem or other channel counts), the classifier always.
        weights_path: a local copy of the ImageNet state dict to use instead of downloading.

    Raises:
        WeightsUnavailableError: ``pretrained=true`` and the weights cannot be fetched or read.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], cifar_stem: bool = True,
                 dropout: float = 0.5, pretrained: bool = False, weights_path: str | None = None):
        base = resnet18(weights=None)
        if pretrained:
            base.load_state_dict(_imagenet_state_dict(weights_path))
        c = input_shape[0]
        if cifar_stem:
            base.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
            base.maxpool = nn.Identity()
        elif c != 3:
            base.conv1 = nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
        trunk = nn.Sequential(base.conv1, base.bn1, base.relu, base.maxpool, base.layer1, base.layer2,
                              base.layer3, base.layer4, base.avgpool, nn.Flatten())
        head = nn.Sequential(*([nn.Dropout(dropout)] if dropout > 0 else []),
                             nn.Linear(base.fc.in_features, num_classes))
        super().__init__(trunk, head)
