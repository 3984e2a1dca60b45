"""MobileNetV2 (Sandler et al., 2018): inverted residuals with linear bottlenecks, ReLU6.

Block for block as torchvision's `mobilenet_v2`: a 3×3 stride-2 stem of 32 channels, the
paper's table of bottleneck stages (expansion t, channels c, repeats n, first stride s), a 1×1
conv to 1280 channels, global average pooling, dropout 0.2 and a linear classifier. At width
1.0, 224×224 and 1000 classes it has 3,504,872 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from toolkit.models.zoo.blocks import ConvBNAct, init_weights, make_divisible

# (expansion t, output channels c, repeats n, stride of the first repeat s), Table 2 of the paper
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1×1 expand (ReLU6) → 3×3 depthwise (ReLU6) → 1×1 linear projection; residual add
    when stride 1 and channels match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier.

    Args:
        num_classes: classifier outputs. Default 10.
        width: width multiplier α applied to every layer (rounded to multiples of 8); the last
            conv keeps 1280 channels for α ≤ 1 as in the paper. Default 1.0.
        input_size: side of the square RGB input the model reports in `input_shape`; any size
            works at run time (global pooling). Default 32 (224 is the published size).
        dropout: dropout before the classifier. Default 0.2.
    """

    def __init__(
        self, num_classes: int = 10, width: float = 1.0, input_size: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.input_shape = (1, 3, input_size, input_size)
        channels = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [ConvBNAct(3, channels, 3, 2, activation=nn.ReLU6)]
        for t, c, n, s in STAGES:
            out = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        layers.append(ConvBNAct(channels, last, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v2(num_classes: int = 10, width: float = 1.0, input_size: int = 32) -> MobileNetV2:
    """MobileNetV2 at `width`, 3×`input_size`×`input_size` input, `num_classes` outputs."""
    return MobileNetV2(num_classes=num_classes, width=width, input_size=input_size)
