"""Building blocks shared by the zoo's CNNs: conv-BN-activation, squeeze-excite, channel rounding.

The blocks follow torchvision's `ops.misc.Conv2dNormActivation` / `SqueezeExcitation` and its
`_make_divisible`, so a model built from them matches the published parameter counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import nn

# `() -> nn.Module` building a fresh activation layer, e.g. `nn.ReLU6`.
ActivationFactory = Callable[[], nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Rounds a channel count to the nearest multiple of `divisor`, never below 90% of `value`.

    The rule of the MobileNet/EfficientNet reference code (TF slim `_make_divisible`): round to
    the nearest multiple, at least `min_value` (default `divisor`), and one multiple up when
    rounding down lost more than 10%.
    """
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → activation, with 'same' padding for odd kernels.

    Children are named `0`, `1`, `2` like torchvision's `Conv2dNormActivation`, so conv+BN
    fusion and pruning tools see the usual pattern. `activation=None` leaves the activation out
    (the linear bottleneck's projection).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: Optional[ActivationFactory] = nn.ReLU,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as MobileNetV3 uses it.

    Global average pool → 1×1 conv to `squeeze_channels` (with bias) → `activation` → 1×1 conv
    back (with bias) → `gate` → channel-wise scale of the input. MobileNetV3 uses ReLU and
    hardsigmoid; the original paper ReLU and sigmoid.
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        activation: ActivationFactory = nn.ReLU,
        gate: ActivationFactory = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.activation = activation()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


def init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal fan-out convs, unit BN, N(0, 0.01) linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
