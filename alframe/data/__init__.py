"""Datasets for active learning: the train source (pool + labelled set), validation and test."""

from alframe.data.base import ALData, DatasetError, LabelledView, TensorImageDataset, stratified_split

__all__ = ["ALData", "DatasetError", "LabelledView", "TensorImageDataset", "stratified_split"]
