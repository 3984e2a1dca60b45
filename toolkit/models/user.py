"""The user's own models: `file.py:function` (its folder importable), `module:function`, or a
torch.export `.pt2`."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.errors import ModelFileError, SetupError
from toolkit.models.checks import raised
from toolkit.models.folder import folder_scope, import_file


def resolve_callable(spec: str, what: str = "model") -> Callable[..., Any]:
    """Imports `path/to/file.py:function` or `package.module:function` and returns the function.

    A file's folder is importable while it loads and while the function runs: `model.py` may
    `from blocks import Bneck` beside it (`toolkit.models.folder`).

    Raises:
        ModelFileError: the file or module is missing, or has no such attribute.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ModelFileError(f"{what} {spec!r}: expected 'file.py:function' or 'module:function'")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ModelFileError(f"{what} {spec!r}: file {path} does not exist")
        try:
            module = import_file(path)
        except Exception as exc:  # noqa: BLE001 - the user's file failed to import
            raise SetupError(f"{what} {spec!r}: importing {path.name} raised {raised(exc)}"
                             ) from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelFileError(
                f"{what} {spec!r}: cannot import module {target!r}: {exc}"
            ) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelFileError(f"{what} {spec!r}: {target} has no callable {attr!r}")
    if not target.endswith(".py"):
        return fn

    @functools.wraps(fn)
    def in_folder(*args: Any, **kwargs: Any) -> Any:
        with folder_scope(module):  # a sibling imported inside the function resolves too
            return fn(*args, **kwargs)

    return in_folder


def load_callable_model(spec: str) -> nn.Module:
    """Calls the function named by `spec` and checks that it returns an `nn.Module`.

    Raises:
        ModelFileError: the file or function is missing.
        SetupError: the function raised (its exception in the message), or returned no module.
    """
    fn = resolve_callable(spec, "model")
    try:
        module = fn()
    except Exception as exc:  # noqa: BLE001 - the user's function failed
        raise SetupError(f"model {spec!r}: {spec} raised {raised(exc)}") from None
    if not isinstance(module, nn.Module):
        raise SetupError(f"model {spec!r}: expected the function to return an nn.Module, got "
                         f"{type(module).__name__}")
    return module


def load_exported(path: Path) -> tuple[nn.Module, tuple[int, ...]]:
    """Loads a torch.export `.pt2` and returns its module and the example input's shape."""
    if not path.is_file():
        raise ModelFileError(f"model {path}: file does not exist")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch raises many kinds for a bad archive
        raise ModelFileError(f"model {path}: not a torch.export .pt2 archive: {exc}") from exc
    shape: tuple[int, ...] = ()
    for node in program.graph.nodes:  # the first user input's traced shape
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            value = node.meta.get("val")
            if value is not None:
                shape = tuple(d if isinstance(d, int) else 1 for d in value.shape)
            break
    return program.module(), shape
