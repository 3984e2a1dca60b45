"""The `Dataset` every host-side stage uses: train/test tensors plus loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class Dataset:
    """A dataset held in memory: inputs and targets (class labels unless they are floats).

    Attributes:
        name: where it came from (`digits`, a file path, `module:function`).
        train_x: training inputs, float32, shape (N, *input_shape).
        train_y: training targets: int64 labels, shape (N,) for classes (or (N, H, W) masks,
            (N, T) token ids), or float32 values (regression, denoising).
        test_x: test inputs, float32, shape (M, *input_shape).
        test_y: test targets, as train_y.
        num_classes: number of classes (labels are 0..num_classes-1); 0 for float targets.
        input_shape: one sample's shape without the batch dimension, e.g. (1, 8, 8).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def has_labels(self) -> bool:
        """Whether the targets are one integer class label per sample (a classifier's)."""
        return not self.test_y.is_floating_point() and self.test_y.ndim == 1

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
