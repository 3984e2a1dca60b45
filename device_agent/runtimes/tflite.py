"""TFLite via ai_edge_litert (LiteRT), else the older tflite_runtime module."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

import numpy as np

from device_agent.runtimes.base import (
    LoadedModel,
    OpRow,
    OpsTable,
    Runtime,
    RuntimeStatus,
    TensorInfo,
)

TFLITE_OPS_NOTE = (
    "LiteRT's Python API has no per-operator timing: op counts only (mean_ms 0); "
    "for times, run LiteRT's benchmark_model with --enable_op_profiling on the device"
)

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
    def __init__(self, interpreter: Any, path: str = "") -> None:
        self._interp = interpreter
        self._path = path
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

    def profile_ops(self, inputs: list[np.ndarray], runs: int) -> OpsTable:
        """The model's op histogram (LiteRT's Python API times no single op): one row per op
        type with its count, mean_ms 0, and how many ops the delegate took, in the note."""
        ops = _model_ops(self._path) if self._path else None
        delegated = [op for op in self._interp._get_ops_details() if op["op_name"] == "DELEGATE"]
        if ops is None:  # no resolver choice in this module: the loaded graph, delegates aside
            ops = [op for op in self._interp._get_ops_details() if op["op_name"] != "DELEGATE"]
        counts: dict[str, int] = {}
        for op in ops:
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        rows = tuple(OpRow(name, name, n, 0.0) for name, n in counts.items())
        note = TFLITE_OPS_NOTE
        if delegated:
            note += f"; {len(delegated)} delegate partition(s) run them"
        return OpsTable(rows, "tflite-op-histogram", note)


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
        return TFLiteModel(module.Interpreter(**kwargs), path)


def _model_ops(path: str) -> Any:
    """The ops the model file holds (before any delegate replaces them), or None when the
    interpreter module cannot leave its default delegates out."""
    module, _, _ = _interpreter_module()
    resolver = getattr(module, "OpResolverType", None)
    if resolver is None:
        return None
    plain = module.Interpreter(
        model_path=path,
        experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return plain._get_ops_details()
