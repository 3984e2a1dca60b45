"""Bundled reference models for the digits dataset, trained on first use and cached.

Training is seeded and takes seconds on 2 cores; the state_dict is cached under
`edgeloop_home()/reference_models/` so later runs load it.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable

import torch
from torch import nn

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


# name -> (constructor taking a width multiplier, epochs, learning rate)
REFERENCE_MODELS: dict[str, tuple[Callable[..., nn.Module], int, float]] = {
    "digits-cnn": (DigitsCNN, 12, 3e-3),
    "digits-mlp": (DigitsMLP, 30, 3e-3),
}


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
    data = load_dataset("digits")
    torch.manual_seed(seed)
    model.load_state_dict(build_reference(name).state_dict())  # init under the seed
    train_epochs(model, data.train_loader(batch_size=64, seed=seed), epochs, lr, seed=seed)
    acc = accuracy(model, data.test_loader())
    card = {"name": name, "seed": seed, "epochs": epochs, "lr": lr, "test_accuracy_pct": acc}
    path = edgeloop_home() / "reference_models" / f"{name}-v{_VERSION}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2))
