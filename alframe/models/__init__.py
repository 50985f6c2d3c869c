"""Backbones (deterministic trunk + stochastic head) and the Lightning training module."""

from alframe.models.base import ALNet, mc_dropout
from alframe.models.cnn import BatchBALDCNN, GalCNN, SmallCNN
from alframe.models.lightning import ALClassifier

__all__ = ["ALNet", "BatchBALDCNN", "GalCNN", "SmallCNN", "ALClassifier", "mc_dropout"]
