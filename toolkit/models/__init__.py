"""Models the toolkit compresses: bundled references or the user's own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from torch import nn

from toolkit.errors import ModelFileError
from toolkit.models.checks import check_setup
from toolkit.models.reference import REFERENCE_MODELS, default_dataset, reference_model
from toolkit.models.user import load_callable_model, load_exported
from toolkit.models.zoo import ZOO, zoo_name


@dataclass
class LoadedModel:
    """A model ready for compression.

    Attributes:
        module: the torch module (eval mode).
        input_shape: one input's shape including the batch dimension, e.g. (1, 1, 8, 8).
        name: the spec it was loaded from (`digits-cnn`, `net.py:build`, `model.pt2`).
    """

    module: nn.Module
    input_shape: tuple[int, ...]
    name: str


def load_model(
    spec: Union[str, Path, nn.Module], input_shape: Optional[Sequence[int]] = None
) -> LoadedModel:
    """Loads a model by reference name, `file.py:function`, `module:function` or `.pt2` path.

    Args:
        spec: `digits-cnn` / `digits-mlp` / `digits-mobilenet` (trained on first use), a zoo
            architecture (`mobilenet_v2` or `zoo:mobilenet_v2`: untrained, seeded, 10
            classes, its default input; the module's `dataset` names the bundled dataset
            that fits it, if any), a function spec returning an `nn.Module`, a torch.export
            `.pt2` file, or an `nn.Module` itself.
        input_shape: input shape including the batch dimension; overrides the module's
            `input_shape` attribute or the `.pt2` example input.

    Raises:
        ModelFileError: unknown name, missing file, or no input shape could be found.
    """
    if isinstance(spec, nn.Module):
        module, shape, name = spec, getattr(spec, "input_shape", ()), type(spec).__name__
    else:
        name = str(spec)
        try:
            zoo = zoo_name(name)
        except KeyError as exc:
            raise ModelFileError(str(exc.args[0])) from None
        if name in REFERENCE_MODELS:
            module = reference_model(name)
            shape = module.input_shape
        elif zoo is not None:
            module, shape = _zoo_model(zoo), ZOO[zoo].input_shape
        elif name.endswith(".pt2"):
            module, shape = load_exported(Path(name).expanduser())
        elif ":" in name:
            module = load_callable_model(name)
            shape = getattr(module, "input_shape", ())
        else:
            raise ModelFileError(
                f"model {name!r}: expected one of {sorted(REFERENCE_MODELS)}, a zoo model "
                f"{sorted(ZOO)}, 'file.py:function', 'module:function' or a .pt2 file"
            )
    if input_shape:
        shape = tuple(int(d) for d in input_shape)
    if not shape:
        raise ModelFileError(
            f"model {name!r}: no input shape; pass --input-shape (with the batch dimension, "
            "e.g. 1,1,8,8) or give the module an input_shape attribute"
        )
    try:
        module.eval()
    except (NotImplementedError, RuntimeError):
        pass  # torch.export modules may refuse eval(); they are exported in eval mode
    return LoadedModel(module=module, input_shape=tuple(int(d) for d in shape), name=name)


def _zoo_model(name: str) -> nn.Module:
    """The untrained zoo model `name`, initialised under seed 0 (the same weights each time)."""
    import torch

    from toolkit.models.zoo import build

    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = build(name)
    if ZOO[name].dataset:
        module.dataset = ZOO[name].dataset
    return module


__all__ = ["LoadedModel", "check_setup", "default_dataset", "load_model", "REFERENCE_MODELS",
           "reference_model"]
