"""Layer lookup shared by the compression steps: which layers carry weights, and by what name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import torch
from torch import nn

from toolkit.compress.base import CompressionStep

LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Returns the Conv/Linear layers of `model` by their `named_modules` name, in order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)}


def resolve_layers(
    step: CompressionStep,
    model: nn.Module,
    key: str,
    names: Iterable[str],
    layers: Optional[dict[str, nn.Module]] = None,
) -> dict[str, nn.Module]:
    """Looks up layer names; an unknown one raises the step's error naming `key`."""
    layers = weighted_layers(model) if layers is None else layers
    for name in names:
        if name not in layers:
            shown = ", ".join(list(layers)[:12]) + (", ..." if len(layers) > 12 else "")
            raise step.error(key, f"layer names of the model ({shown})", name)
    return {name: layers[name] for name in names}


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replaces the submodule called `name` (dotted, as in `named_modules`) by `module`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def count_params(model: nn.Module) -> int:
    """Returns the number of parameter elements (weights and biases)."""
    return sum(p.numel() for p in model.parameters())


def sparsity(model: nn.Module) -> float:
    """Returns the fraction (0-1) of Conv/Linear weight elements that are exactly zero."""
    weights = [m.weight for m in weighted_layers(model).values()]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Returns the layer whose output is the model's output (else the last weighted layer)."""
    outputs: dict[int, nn.Module] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out: outputs.__setitem__(id(out), mod))
        for m in weighted_layers(model).values()
    ]
    try:
        with torch.no_grad():
            result = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    if id(result) in outputs:
        return [outputs[id(result)]]
    layers = list(weighted_layers(model).values())
    return layers[-1:]
