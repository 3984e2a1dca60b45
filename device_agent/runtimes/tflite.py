"""TFLite via ai_edge_litert (LiteRT), else the older tflite_runtime module."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

import numpy as np

from device_agent.runtimes.base import LoadedModel, Runtime, RuntimeStatus, TensorInfo

_MODULES = ("ai_edge_litert", "tflite_runtime")


@lru_cache(maxsize=1)
def _interpreter_module() -> tuple[Any, str, str]:
    errors = []
    for name in _MODULES:
        try:
            module = importlib.import_module(f"{name}.interpreter")
        except Exception as exc:  # ImportError, or a binary module failing to load
            errors.append(f"{name}: {exc}")
            continue
        version = _version_of(name)
        return module, name, version
    raise ImportError("; ".join(errors))


def _version_of(name: str) -> str:
    from importlib import metadata

    for dist in (name.replace("_", "-"), name):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


def tensor_info(detail: dict) -> TensorInfo:
    """Converts an interpreter tensor detail into a TensorInfo."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    dtype = np.dtype(detail["dtype"]).name
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    quantized = scale and dtype in ("int8", "uint8", "int16")
    return TensorInfo(
        name=detail["name"],
        shape=tuple(int(d) for d in shape),
        dtype=dtype,
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


class TFLiteModel(LoadedModel):
    def __init__(self, interpreter: Any) -> None:
        self._interp = interpreter
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self.inputs = [tensor_info(d) for d in self._in]
        self.outputs = [tensor_info(d) for d in self._out]

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        resized = False
        for detail, array in zip(self._in, arrays):
            if tuple(detail["shape"]) != array.shape:
                self._interp.resize_tensor_input(detail["index"], list(array.shape))
                resized = True
        if resized:
            self._interp.allocate_tensors()
            self._in = self._interp.get_input_details()
            self._out = self._interp.get_output_details()
        for detail, array in zip(self._in, arrays):
            self._interp.set_tensor(detail["index"], array)

    def run(self) -> None:
        self._interp.invoke()

    def get_outputs(self) -> list[np.ndarray]:
        return [np.array(self._interp.get_tensor(d["index"])) for d in self._out]


class TFLiteRuntime(Runtime):
    name = "tflite"
    formats = ("tflite",)

    @classmethod
    def status(cls) -> RuntimeStatus:
        try:
            _, module, version = _interpreter_module()
        except ImportError as exc:
            return RuntimeStatus(cls.name, False, reason=f"no TFLite interpreter module ({exc})")
        return RuntimeStatus(cls.name, True, version=version, module=module, accelerators=("cpu",))

    def load(self, path: str, threads: int = 0, accelerator: str = "") -> LoadedModel:
        module, _, _ = _interpreter_module()
        kwargs = {"model_path": path}
        if threads > 0:
            kwargs["num_threads"] = threads
        return TFLiteModel(module.Interpreter(**kwargs))
