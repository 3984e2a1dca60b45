"""A zoo of published architectures, written block for block in this project.

torchvision and timm cannot be installed beside the CPU torch used here, so the models the
toolkit is tested and benchmarked on are defined in these modules. Each is untrained; every
constructor takes `num_classes` (default 10) and small inputs by default so tests stay fast,
and the built module carries `input_shape` (with the batch dimension) like the reference models.

`ZOO` names each architecture with its constructor, default input, a line on what it is, its
source, and the published configuration and parameter count that prove it faithful:

    >>> from toolkit.models.zoo import ZOO, build
    >>> model = build("mobilenet_v2")               # 10 classes, 3×32×32
    >>> ZOO["mobilenet_v2"].published_params        # at 224×224 and 1000 classes
    3504872
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

from toolkit.models.zoo.ds_cnn import ds_cnn
from toolkit.models.zoo.efficientnet_lite import efficientnet_lite0
from toolkit.models.zoo.mobilenet_v2 import mobilenet_v2
from toolkit.models.zoo.mobilenet_v3 import mobilenet_v3_small
from toolkit.models.zoo.resnet import resnet18
from toolkit.models.zoo.transformer import transformer_encoder
from toolkit.models.zoo.vit import vit_tiny


@dataclass(frozen=True)
class ZooEntry:
    """One architecture of the zoo.

    Attributes:
        constructor: builds the untrained model; takes `num_classes` and the keyword
            arguments of `published_config`.
        input_shape: the default model's input shape, with the batch dimension.
        description: what the architecture is, in one line.
        citation: the paper and the reference implementation it follows.
        published_config: keyword arguments that build the published configuration
            (e.g. 1000 classes at 224×224); empty when there is none.
        published_params: the published parameter count of that configuration (trainable
            parameters, BatchNorm running statistics excluded); None when there is none.
        dataset: the bundled dataset that fits the default input (`digits-32-rgb` for the
            3×32×32 image models), the default of `compress`/`tune`; None: none fits, the
            user gives `--data`.
    """

    constructor: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    description: str
    citation: str
    published_config: dict[str, Any] = field(default_factory=dict)
    published_params: Optional[int] = None
    dataset: Optional[str] = None


ZOO: dict[str, ZooEntry] = {
    "mobilenet_v2": ZooEntry(
        mobilenet_v2, (1, 3, 32, 32),
        "inverted residuals with linear bottlenecks, depthwise 3×3, ReLU6, width multiplier",
        "Sandler et al., MobileNetV2, CVPR 2018; torchvision models/mobilenetv2.py",
        {"num_classes": 1000, "input_size": 224}, 3_504_872,
        dataset="digits-32-rgb",
    ),
    "mobilenet_v3_small": ZooEntry(
        mobilenet_v3_small, (1, 3, 32, 32),
        "inverted residuals, hardswish, squeeze-excite with hardsigmoid, NAS block table",
        "Howard et al., Searching for MobileNetV3, ICCV 2019; torchvision models/mobilenetv3.py",
        {"num_classes": 1000, "input_size": 224}, 2_542_856,
        dataset="digits-32-rgb",
    ),
    "efficientnet_lite0": ZooEntry(
        efficientnet_lite0, (1, 3, 32, 32),
        "MBConv (B0 stages) with ReLU6, no squeeze-excite, fixed 32-channel stem and 1280 head",
        "Tan & Le, EfficientNet, ICML 2019; TF tpu/models/official/efficientnet/lite",
        {"num_classes": 1000, "input_size": 224}, 4_652_008,
        dataset="digits-32-rgb",
    ),
    "resnet18": ZooEntry(
        resnet18, (1, 3, 32, 32),
        "residual network of BasicBlocks (2-2-2-2), 7×7 stem and max pool",
        "He et al., Deep Residual Learning, CVPR 2016; torchvision models/resnet.py",
        {"num_classes": 1000, "input_size": 224}, 11_689_512,
        dataset="digits-32-rgb",
    ),
    "ds_cnn": ZooEntry(
        ds_cnn, (1, 1, 49, 10),
        "keyword-spotting depthwise-separable CNN (64 filters, 4 DS blocks) on 49×10 MFCCs",
        "Zhang et al., Hello Edge, arXiv:1711.07128 (DS-CNN-S); MLPerf Tiny KWS keras_model.py",
        {"num_classes": 12}, 23_756,
    ),
    "transformer_encoder": ZooEntry(
        transformer_encoder, (1, 49, 10),
        "2-layer, 4-head torch.nn.TransformerEncoder classifier over 49 tokens of 10 features",
        "Vaswani et al., Attention Is All You Need, 2017; torch.nn.TransformerEncoder",
    ),
    "vit_tiny": ZooEntry(
        vit_tiny, (1, 3, 32, 32),
        "ViT-Tiny: conv patch embedding, class token, 12 pre-norm blocks of hand-written "
        "3-head attention and GELU MLP (192 wide); 4×4 patches on 32×32 by default",
        "Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021; Touvron et al., DeiT, "
        "2021; timm vit_tiny_patch16_224",
        {"num_classes": 1000, "input_size": 224, "patch_size": 16}, 5_717_416,
        dataset="digits-32-rgb",
    ),
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Builds the untrained zoo model `name` with the constructor's keyword arguments.

    Raises:
        KeyError: `name` is not in `ZOO` (the message lists the names).
    """
    if name not in ZOO:
        raise KeyError(f"zoo model {name!r}: expected one of {sorted(ZOO)}")
    return ZOO[name].constructor(**kwargs)


ZOO_PREFIX = "zoo:"


def zoo_name(spec: object) -> Optional[str]:
    """The zoo name a model spec names (`mobilenet_v2` or `zoo:mobilenet_v2`), else None.

    Raises:
        KeyError: a `zoo:` spec whose name is not in `ZOO` (the message lists the names).
    """
    if not isinstance(spec, str):
        return None
    if spec.startswith(ZOO_PREFIX):
        name = spec[len(ZOO_PREFIX):]
        if name not in ZOO:
            raise KeyError(f"zoo model {name!r}: expected one of {sorted(ZOO)}")
        return name
    return spec if spec in ZOO else None


__all__ = ["ZOO", "ZOO_PREFIX", "ZooEntry", "build", "zoo_name"]
