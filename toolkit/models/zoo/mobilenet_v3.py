"""MobileNetV3-Small (Howard et al., 2019): hardswish, squeeze-excite with hardsigmoid.

Block for block as torchvision's `mobilenet_v3_small`: a 3×3 stride-2 stem of 16 channels with
hardswish, the paper's Table 2 of bottlenecks, a 1×1 conv to 576 channels, global average
pooling, then Linear 576→1024, hardswish, dropout 0.2, Linear 1024→classes. BatchNorm uses
eps 0.001 and momentum 0.01. At width 1.0, 224×224 and 1000 classes it has 2,542,856 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from toolkit.models.zoo.blocks import (
    ActivationFactory,
    ConvBNAct,
    SqueezeExcite,
    init_weights,
    make_divisible,
)


@dataclass(frozen=True)
class Bneck:
    """One row of the paper's block table (channels before the width multiplier).

    Attributes:
        in_channels, kernel, expanded, out_channels: the row's input channels, depthwise kernel
            size, expansion ("exp size") and output channels.
        se: whether the block has squeeze-excite.
        hardswish: hardswish (`HS`) rather than ReLU (`RE`) in the block.
        stride: the depthwise conv's stride.
    """

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    se: bool
    hardswish: bool
    stride: int


# MobileNetV3-Small, Table 2 of the paper (as in torchvision's `_mobilenet_v3_conf`)
SMALL: tuple[Bneck, ...] = (
    Bneck(16, 3, 16, 16, True, False, 2),
    Bneck(16, 3, 72, 24, False, False, 2),
    Bneck(24, 3, 88, 24, False, False, 1),
    Bneck(24, 5, 96, 40, True, True, 2),
    Bneck(40, 5, 240, 40, True, True, 1),
    Bneck(40, 5, 240, 40, True, True, 1),
    Bneck(40, 5, 120, 48, True, True, 1),
    Bneck(48, 5, 144, 48, True, True, 1),
    Bneck(48, 5, 288, 96, True, True, 2),
    Bneck(96, 5, 576, 96, True, True, 1),
    Bneck(96, 5, 576, 96, True, True, 1),
)
SMALL_LAST_CHANNELS = 1024


class InvertedResidualV3(nn.Module):
    """1×1 expand → k×k depthwise → squeeze-excite → 1×1 linear projection (+ input when the
    stride is 1 and channels match).

    The expansion is left out when it would not change the channel count (the first block).
    """

    def __init__(
        self,
        in_channels: int,
        kernel: int,
        expanded: int,
        out_channels: int,
        se: bool,
        activation: ActivationFactory,
        stride: int,
        bn_eps: float = 0.001,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        conv = partial(ConvBNAct, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(conv(in_channels, expanded, 1, activation=activation))
        layers.append(conv(expanded, expanded, kernel, stride, groups=expanded,
                           activation=activation))
        if se:
            layers.append(SqueezeExcite(expanded, make_divisible(expanded // 4, 8)))
        layers.append(conv(expanded, out_channels, 1, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.block(x)
        return self.block(x)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small classifier.

    Args:
        num_classes: classifier outputs. Default 10.
        width: width multiplier applied to every block's channels (multiples of 8). Default 1.0.
        input_size: side of the square RGB input reported in `input_shape`. Default 32
            (224 is the published size).
        dropout: dropout inside the classifier. Default 0.2.
    """

    def __init__(
        self, num_classes: int = 10, width: float = 1.0, input_size: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.input_shape = (1, 3, input_size, input_size)

        def adjust(channels: int) -> int:
            return make_divisible(channels * width, 8)

        first = adjust(SMALL[0].in_channels)
        layers: list[nn.Module] = [
            ConvBNAct(3, first, 3, 2, activation=nn.Hardswish, bn_eps=0.001, bn_momentum=0.01)
        ]
        for row in SMALL:
            layers.append(InvertedResidualV3(
                adjust(row.in_channels), row.kernel, adjust(row.expanded),
                adjust(row.out_channels), row.se,
                nn.Hardswish if row.hardswish else nn.ReLU, row.stride,
            ))
        last_conv = 6 * adjust(SMALL[-1].out_channels)
        layers.append(ConvBNAct(adjust(SMALL[-1].out_channels), last_conv, 1,
                                activation=nn.Hardswish, bn_eps=0.001, bn_momentum=0.01))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = adjust(SMALL_LAST_CHANNELS)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, last),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(last, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_small(
    num_classes: int = 10, width: float = 1.0, input_size: int = 32
) -> MobileNetV3Small:
    """MobileNetV3-Small at `width`, 3×`input_size`×`input_size` input, `num_classes` outputs."""
    return MobileNetV3Small(num_classes=num_classes, width=width, input_size=input_size)
