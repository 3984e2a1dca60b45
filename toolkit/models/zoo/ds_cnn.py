"""DS-CNN for keyword spotting: MLPerf Tiny's KWS reference (Zhang et al., "Hello Edge", 2017).

The MLPerf Tiny v0.5+ reference (`keras_model.py`, model `ds_cnn`), which is Hello Edge's
DS-CNN-S: input 49×10 MFCC (49 frames × 10 coefficients, one channel); a 10×4 stride-2 conv
of 64 filters (with bias) → BN → ReLU → dropout 0.2; four depthwise-separable blocks
(3×3 depthwise with bias → BN → ReLU → 1×1 conv of 64 with bias → BN → ReLU); dropout 0.4;
average pooling over the 25×5 map; dense to the classes (12 keywords in MLPerf Tiny).

Two deliberate differences that change no parameter: the stem pads 5 rows/1 column on each side
(Keras 'same' pads 4 top / 5 bottom; the 25×5 output is the same), and the pooling averages
the whole 25×5 map (`AdaptiveAvgPool2d`; the Keras pool of 24×5 skips the last row).
With 12 classes: 23,756 parameters (24,908 counting BatchNorm's running statistics, as the
Keras summary does).
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (1, 1, 49, 10)
FILTERS = 64
DS_BLOCKS = 4


class DSConv(nn.Module):
    """3×3 depthwise conv → BN → ReLU → 1×1 pointwise conv → BN → ReLU (convs with bias)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, 1, 1, groups=in_channels)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class DSCNN(nn.Module):
    """The MLPerf Tiny keyword-spotting DS-CNN.

    Args:
        num_classes: classifier outputs. Default 10 (MLPerf Tiny uses 12).
        width: multiplier on the 64 filters. Default 1.0.
        input_shape: input with batch dimension. Default (1, 1, 49, 10), one MFCC map.
    """

    def __init__(
        self, num_classes: int = 10, width: float = 1.0,
        input_shape: tuple[int, int, int, int] = INPUT_SHAPE,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        filters = max(1, int(round(FILTERS * width)))
        self.conv1 = nn.Conv2d(input_shape[1], filters, (10, 4), (2, 2), (5, 1))
        self.bn1 = nn.BatchNorm2d(filters)
        self.relu = nn.ReLU()
        self.dropout1 = nn.Dropout(0.2)
        self.blocks = nn.Sequential(*[DSConv(filters, filters) for _ in range(DS_BLOCKS)])
        self.dropout2 = nn.Dropout(0.4)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(filters, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout1(self.relu(self.bn1(self.conv1(x))))
        x = self.dropout2(self.blocks(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def ds_cnn(num_classes: int = 10, width: float = 1.0) -> DSCNN:
    """MLPerf Tiny's KWS DS-CNN on a 1×49×10 MFCC map, `num_classes` outputs."""
    return DSCNN(num_classes=num_classes, width=width)
