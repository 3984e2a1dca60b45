"""Datasets for training, calibration and accuracy: `digits`, `.npz` files, callables."""

from toolkit.data.dataset import Dataset
from toolkit.data.loaders import load_dataset

__all__ = ["Dataset", "load_dataset"]
