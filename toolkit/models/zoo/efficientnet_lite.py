"""EfficientNet-Lite0 (Tan & Le, 2019; the TF "lite" variant): MBConv with ReLU6, no SE.

As the reference `efficientnet_lite_builder` defines the lite models for mobile accelerators:
EfficientNet-B0's stage table, swish replaced by ReLU6, squeeze-excite removed, and the stem
(32 channels) and head (1280 channels) fixed rather than scaled with the width. BatchNorm eps
0.001, momentum 0.01 (TF's 0.99). Stochastic depth is a training-time regulariser, left out
(identity at inference). At width 1.0, 224×224 and 1000 classes it has 4,652,008 parameters.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from toolkit.models.zoo.blocks import ConvBNAct, init_weights, make_divisible

# (expansion, kernel, stride, input channels, output channels, repeats): EfficientNet-B0, Table 1
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
_conv = partial(ConvBNAct, bn_eps=0.001, bn_momentum=0.01, activation=nn.ReLU6)


class MBConv(nn.Module):
    """1×1 expand (ReLU6) → k×k depthwise (ReLU6) → 1×1 linear projection; residual add
    when stride 1 and channels match."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv(in_channels, hidden, 1))
        layers += [
            _conv(hidden, hidden, kernel, stride, groups=hidden),
            _conv(hidden, out_channels, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.block(x)
        return self.block(x)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier (Lite0 at width 1.0, depth 1.0).

    Args:
        num_classes: classifier outputs. Default 10.
        width: width coefficient for the stages (multiples of 8); stem and head stay fixed.
            Default 1.0 (Lite0).
        depth: depth coefficient: repeats of the inner stages are `ceil(depth × n)`; the first
            and last stage keep theirs. Default 1.0 (Lite0).
        input_size: side of the square RGB input reported in `input_shape`. Default 32
            (224 is Lite0's published size).
        dropout: dropout before the classifier. Default 0.2.
    """

    def __init__(
        self, num_classes: int = 10, width: float = 1.0, depth: float = 1.0,
        input_size: int = 32, dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.input_shape = (1, 3, input_size, input_size)
        layers: list[nn.Module] = [_conv(3, STEM_CHANNELS, 3, 2)]
        channels = STEM_CHANNELS
        for index, (expansion, kernel, stride, _, out, repeats) in enumerate(STAGES):
            out = make_divisible(out * width)
            if 0 < index < len(STAGES) - 1:
                repeats = int(math.ceil(depth * repeats))
            for i in range(repeats):
                layers.append(MBConv(channels, out, kernel, stride if i == 0 else 1, expansion))
                channels = out
        layers.append(_conv(channels, HEAD_CHANNELS, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD_CHANNELS, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet_lite0(
    num_classes: int = 10, width: float = 1.0, input_size: int = 32
) -> EfficientNetLite:
    """EfficientNet-Lite0 (depth 1.0), optionally narrower/wider by `width`."""
    return EfficientNetLite(num_classes=num_classes, width=width, input_size=input_size)
