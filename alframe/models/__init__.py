"""Backbones (deterministic trunk + stochastic head) and the Lightning training module."""

from alframe.models.base import ALNet, mc_dropout
from alframe.models.cnn import BatchBALDCNN, GalCNN, ImageClassifier, LeNet5, SmallCNN
from alframe.models.lightning import ALClassifier
from alframe.models.resnet import ResNet18

__all__ = ["ALNet", "BatchBALDCNN", "GalCNN", "ImageClassifier", "LeNet5", "ResNet18", "SmallCNN", "ALClassifier",
           "mc_dropout"]
