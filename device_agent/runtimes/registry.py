"""Runtimes by name, and the default runtime for each model format."""

from __future__ import annotations

import importlib

from device_agent.runtimes.base import Runtime, RuntimeStatus

# name -> "module:Class"; modules are imported only when the runtime is asked about.
RUNTIMES: dict[str, str] = {
    "tflite": "device_agent.runtimes.tflite:TFLiteRuntime",
    "onnx": "device_agent.runtimes.onnx:OnnxRuntime",
    "torch": "device_agent.runtimes.torch_pt2:TorchRuntime",
    "tflm": "device_agent.runtimes.tflm:TFLMRuntime",
    "executorch": "device_agent.runtimes.executorch_rt:ExecuTorchRuntime",
}

DEFAULT_FOR_FORMAT = {"tflite": "tflite", "onnx": "onnx", "pt2": "torch", "pte": "executorch"}


class UnknownRuntimeError(LookupError):
    """No runtime has that name."""


class RuntimeUnavailableError(RuntimeError):
    """The runtime is known but cannot run here (module missing)."""


def runtime_class(name: str) -> type[Runtime]:
    """Returns the runtime class for `name`; raises UnknownRuntimeError listing known names."""
    target = RUNTIMES.get(name)
    if target is None:
        raise UnknownRuntimeError(f"unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def runtime_statuses() -> list[RuntimeStatus]:
    """Status of every known runtime, for GetInfo."""
    return [runtime_class(name).status() for name in sorted(RUNTIMES)]


def resolve_runtime(name: str, model_format: str) -> Runtime:
    """Picks the runtime (named, or the default for the format) and checks it can run here."""
    if not name:
        name = DEFAULT_FOR_FORMAT.get(model_format, "")
        if not name:
            raise UnknownRuntimeError(f"no default runtime for model format {model_format!r}")
    cls = runtime_class(name)
    if model_format and model_format not in cls.formats:
        raise UnknownRuntimeError(
            f"runtime {name!r} cannot run {model_format} models (it runs {', '.join(cls.formats)})"
        )
    status = cls.status()
    if not status.available:
        raise RuntimeUnavailableError(
            f"runtime {name!r} is not available on this device: {status.reason}"
        )
    return cls()
