"""Backbones (deterministic trunk + stochastic head), frozen backbones with a feature head, and the
Lightning training module."""

from alframe.models.backbone import FrozenBackbone, build_backbone
from alframe.models.base import ALNet, mc_dropout
from alframe.models.cnn import BatchBALDCNN, GalCNN, ImageClassifier, LeNet5, SmallCNN
from alframe.models.head import FeatureHead
from alframe.models.lightning import ALClassifier
from alframe.models.resnet import ResNet18

__all__ = ["ALNet", "BatchBALDCNN", "FeatureHead", "FrozenBackbone", "GalCNN", "ImageClassifier", "LeNet5",
           "ResNet18", "SmallCNN", "ALClassifier", "build_backbone", "mc_dropout"]
