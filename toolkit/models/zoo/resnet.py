"""ResNet-18 (He et al., 2016) with BasicBlocks, as torchvision's `resnet18`.

7×7 stride-2 stem of 64 channels, BN, ReLU, 3×3 stride-2 max pool; four stages of two
BasicBlocks (64, 128, 256, 512 channels; stride 2 from the second stage on, with a 1×1
conv + BN shortcut where the shape changes); global average pooling; linear classifier.
At width 1.0, 224×224 and 1000 classes it has 11,689,512 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_CHANNELS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)  # ResNet-18


class BasicBlock(nn.Module):
    """3×3 conv-BN-ReLU → 3×3 conv-BN, + shortcut (identity, or 1×1 conv-BN), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet(nn.Module):
    """ResNet built from BasicBlocks (ResNet-18 with the default `blocks`).

    Args:
        num_classes: classifier outputs. Default 10.
        width: multiplier on every stage's channels (64·width, ...). Default 1.0.
        input_size: side of the square RGB input reported in `input_shape`. Default 32
            (224 is the published size).
        blocks: BasicBlocks per stage. Default (2, 2, 2, 2).
    """

    def __init__(
        self, num_classes: int = 10, width: float = 1.0, input_size: int = 32,
        blocks: tuple[int, ...] = BLOCKS_PER_STAGE,
    ) -> None:
        super().__init__()
        self.input_shape = (1, 3, input_size, input_size)
        widths = [max(1, int(round(c * width))) for c in STAGE_CHANNELS]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = widths[0]
        stages = []
        for index, (out, count) in enumerate(zip(widths, blocks)):
            stride = 1 if index == 0 else 2
            layers = []
            for i in range(count):
                layers.append(BasicBlock(channels, out, stride if i == 0 else 1))
                channels = out
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10, width: float = 1.0, input_size: int = 32) -> ResNet:
    """ResNet-18 at `width`, 3×`input_size`×`input_size` input, `num_classes` outputs."""
    return ResNet(num_classes=num_classes, width=width, input_size=input_size)
