"""Datasets for active learning: the train source (pool + labelled set), validation and test."""

from alframe.data.base import ALData, LabelledView, TensorImageDataset, stratified_split
from alframe.errors import DatasetError

__all__ = ["ALData", "DatasetError", "LabelledView", "TensorImageDataset", "stratified_split"]
