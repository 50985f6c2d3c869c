"""Backbones (deterministic trunk + stochastic head) and the Lightning training module."""

from alframe.models.base import ALNet, mc_dropout
from alframe.models.cnn import SmallCNN
from alframe.models.lightning import ALClassifier

__all__ = ["ALNet", "SmallCNN", "ALClassifier", "mc_dropout"]
