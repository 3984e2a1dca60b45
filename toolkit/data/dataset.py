"""The `Dataset` every host-side stage uses: train/test tensors plus loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class Dataset:
    """A classification dataset held in memory.

    Attributes:
        name: where it came from (`digits`, a file path, `module:function`).
        train_x: training inputs, float32, shape (N, *input_shape).
        train_y: training labels, int64, shape (N,).
        test_x: test inputs, float32, shape (M, *input_shape).
        test_y: test labels, int64, shape (M,).
        num_classes: number of classes (labels are 0..num_classes-1).
        input_shape: one sample's shape without the batch dimension, e.g. (1, 8, 8).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    def train_loader(self, batch_size: int = 64, shuffle: bool = True, seed: int = 0) -> DataLoader:
        """Returns a loader over the training split (shuffled with a seeded generator)."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(self.train_x, self.train_y),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator if shuffle else None,
        )

    def test_loader(self, batch_size: int = 256) -> DataLoader:
        """Returns a loader over the test split, in order."""
        return DataLoader(TensorDataset(self.test_x, self.test_y), batch_size=batch_size)

    def calibration(self, n: int = 128) -> torch.Tensor:
        """Returns the first `n` training inputs (fewer if the split is smaller)."""
        return self.train_x[: max(1, n)]

    def batch_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Returns the input shape with a leading batch dimension."""
        return (batch, *self.input_shape)
