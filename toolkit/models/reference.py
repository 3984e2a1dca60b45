"""Bundled reference models for the digits datasets, trained on first use and cached.

Training is seeded and takes seconds (`digits-mobilenet`: about half a minute) on 2 cores; the
state_dict is cached under `edgeloop_home()/reference_models/` so later runs load it. Each
model class names the dataset it is trained and judged on (`dataset`), like its `input_shape`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable

import torch
from torch import nn

from toolkit.models.zoo.blocks import ConvBNAct
from toolkit.models.zoo.mobilenet_v3 import InvertedResidualV3
from toolkit.paths import edgeloop_home

INPUT_SHAPE = (1, 1, 8, 8)
MIN_TEST_ACCURACY_PCT = 95.0
_VERSION = 1  # bump when an architecture or its training recipe changes


class DigitsCNN(nn.Module):
    """conv16-bn-relu, conv32-bn-relu, maxpool 2, flatten, linear 512→128, relu, 128→10.

    Input 1x8x8. About 72k parameters: big enough that an int8 TFLite file is dominated by its
    weights rather than the flatbuffer's fixed overhead.
    """

    input_shape = INPUT_SHAPE
    dataset = "digits"

    def __init__(self, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        c1, c2 = max(1, round(16 * width)), max(1, round(32 * width))
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        hidden = max(1, round(128 * width))
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 4 * 4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class DigitsMLP(nn.Module):
    """flatten, linear 64→128, relu, 128→64, relu, 64→10. Input 1x8x8."""

    input_shape = INPUT_SHAPE
    dataset = "digits"

    def __init__(self, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        h1, h2 = max(1, round(128 * width)), max(1, round(64 * width))
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsMobileNet(nn.Module):
    """A small MobileNetV3-style CNN on digits upsampled to 1x32x32 (`digits-32`).

    Stem conv 3×3/2 to 32 channels (hardswish) → 16×16; six inverted residuals of the zoo's
    MobileNetV3 block (kernel, in → expanded → out, squeeze-excite, activation, stride):
    3, 32→32→32, SE, ReLU, 1 (residual); 3, 32→96→48, ReLU, 2; 3, 48→144→48, ReLU, 1
    (residual); 5, 48→192→96, SE, hardswish, 2; twice 5, 96→288→96, SE, hardswish, 1
    (residual) → 4×4; 1×1 conv to 384 (hardswish), global average pool, linear to 10.
    About 332k parameters: depthwise convs, residual adds, squeeze-excite and hardswish at a
    mobile input size, sized so one fp32 TFLite inference takes 0.1-1 ms on one CPU thread
    (0.16 ms on the 2-core development VM) and training takes under a minute there.
    BatchNorm keeps torch's default momentum (0.1): MobileNetV3's 0.01 leaves the running
    statistics unsettled after so short a training (10% test accuracy in eval mode).
    """

    input_shape = (1, 1, 32, 32)
    dataset = "digits-32"

    def __init__(self, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()

        def c(channels: int) -> int:
            return max(1, round(channels * width))

        hs, relu = nn.Hardswish, nn.ReLU
        # (in, kernel, expanded, out, squeeze-excite, activation, stride)
        rows = [(32, 3, 32, 32, True, relu, 1), (32, 3, 96, 48, False, relu, 2),
                (48, 3, 144, 48, False, relu, 1), (48, 5, 192, 96, True, hs, 2),
                (96, 5, 288, 96, True, hs, 1), (96, 5, 288, 96, True, hs, 1)]
        layers: list[nn.Module] = [ConvBNAct(1, c(32), 3, 2, activation=hs)]
        for cin, k, exp, cout, se, act, stride in rows:
            layers.append(InvertedResidualV3(c(cin), k, c(exp), c(cout), se, act, stride,
                                             bn_eps=1e-5, bn_momentum=0.1))
        layers.append(ConvBNAct(c(96), c(384), 1, activation=hs))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c(384), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# name -> (constructor taking a width multiplier, epochs, learning rate); the constructor's
# class names its dataset (`dataset`) and input (`input_shape`)
REFERENCE_MODELS: dict[str, tuple[Callable[..., nn.Module], int, float]] = {
    "digits-cnn": (DigitsCNN, 12, 3e-3),
    "digits-mlp": (DigitsMLP, 30, 3e-3),
    "digits-mobilenet": (DigitsMobileNet, 8, 1e-3),
}
DEFAULT_DATASET = "digits"


def default_dataset(model: object) -> str:
    """The dataset a model is trained and judged on when none is given.

    Args:
        model: a model spec (`digits-mobilenet`, `net.py:build`, a `.pt2` path) or module.

    Returns:
        A reference model's own dataset (`digits-32` for `digits-mobilenet`), a zoo model's
        (`digits-32-rgb` for the 3×32×32 image models), a module's `dataset` attribute,
        otherwise `digits`.

    Raises:
        SetupError: a zoo model that no bundled dataset fits (`ds_cnn`): `--data` is needed.
    """
    if isinstance(model, str) and model in REFERENCE_MODELS:
        return getattr(REFERENCE_MODELS[model][0], "dataset", DEFAULT_DATASET)
    from toolkit.models.zoo import ZOO, zoo_name

    try:
        zoo = zoo_name(model)
    except KeyError:
        zoo = None  # an unknown zoo: name fails where the model is loaded, with the names
    if zoo is not None:
        if ZOO[zoo].dataset is None:
            from toolkit.errors import SetupError
            from toolkit.models.checks import shape_text

            raise SetupError(
                f"model {model!r}: no bundled dataset fits its input "
                f"{shape_text(ZOO[zoo].input_shape)}; pass --data (a .npz with x and y, or "
                "module:function)")
        return ZOO[zoo].dataset
    own = getattr(model, "dataset", None) if isinstance(model, nn.Module) else None
    return own if isinstance(own, str) else DEFAULT_DATASET


def build_reference(name: str, width: float = 1.0) -> nn.Module:
    """Returns an untrained reference architecture, optionally narrower/wider by `width`."""
    if name not in REFERENCE_MODELS:
        raise KeyError(name)
    return REFERENCE_MODELS[name][0](width=width)


def reference_model(name: str, seed: int = 0) -> nn.Module:
    """Returns the trained reference model `name` in eval mode, training and caching it once.

    Raises:
        KeyError: `name` is not one of `REFERENCE_MODELS`.
    """
    model = build_reference(name)
    path = edgeloop_home() / "reference_models" / f"{name}-v{_VERSION}-seed{seed}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    _train(name, model, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # atomic: a concurrent first use never reads half a file
    return model.eval()


def reference_card(name: str, seed: int = 0) -> dict:
    """Returns training facts of `name` (test accuracy in percent); trains if needed."""
    path = edgeloop_home() / "reference_models" / f"{name}-v{_VERSION}-seed{seed}.json"
    if not path.is_file():
        reference_model(name, seed)
    return json.loads(path.read_text())


def _train(name: str, model: nn.Module, seed: int) -> None:
    from toolkit.data import load_dataset
    from toolkit.models.train import accuracy, train_epochs

    _, epochs, lr = REFERENCE_MODELS[name]
    data = load_dataset(default_dataset(name))
    # Batches of 64 small images gain nothing from a second intra-op thread, and on a loaded
    # 2-core machine two threads thrash: digits-mobilenet took 5 min there, 35 s on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model.load_state_dict(build_reference(name).state_dict())  # init under the seed
        train_epochs(model, data.train_loader(batch_size=64, seed=seed), epochs, lr, seed=seed)
        acc = accuracy(model, data.test_loader())
    finally:
        torch.set_num_threads(threads)
    card = {"name": name, "seed": seed, "epochs": epochs, "lr": lr, "test_accuracy_pct": acc}
    path = edgeloop_home() / "reference_models" / f"{name}-v{_VERSION}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2))
