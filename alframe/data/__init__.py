"""Datasets for active learning: the train source (pool + labelled set), validation and test."""

from alframe.data.base import ALData, LabelledView, TensorImageDataset, stratified_split
from alframe.data.features import TensorFeatureDataset
from alframe.errors import DatasetError

__all__ = ["ALData", "DatasetError", "LabelledView", "TensorFeatureDataset", "TensorImageDataset",
           "stratified_split"]
