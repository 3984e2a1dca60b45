"""TFLite Micro, the microcontroller interpreter, run on the host CPU with an explicit arena.

The interpreter aborts the whole process when its arena is too small, so arena probes run
in throwaway child processes (see device_agent.measure.arena).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from device_agent.runtimes.base import (
    LoadedModel,
    Runtime,
    RuntimeStatus,
    TensorInfo,
    installed_version,
)

DEFAULT_ARENA_BYTES = 4 * 1024 * 1024


def _info(detail: dict, index: int, prefix: str) -> TensorInfo:
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    zeros = params.get("zero_points")
    dtype = np.dtype(detail["dtype"]).name
    quantized = scales is not None and len(scales) and dtype in ("int8", "uint8", "int16")
    return TensorInfo(
        name=f"{prefix}_{index}",
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=dtype,
        scale=float(scales[0]) if quantized else None,
        zero_point=int(zeros[0]) if quantized else None,
    )


class TFLMModel(LoadedModel):
    def __init__(self, interpreter: Any, n_inputs: int, n_outputs: int) -> None:
        self._interp = interpreter
        self.inputs = [_info(interpreter.get_input_details(i), i, "input") for i in range(n_inputs)]
        self.outputs = [
            _info(interpreter.get_output_details(i), i, "output") for i in range(n_outputs)
        ]

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        for i, array in enumerate(arrays):
            self._interp.set_input(array, i)

    def run(self) -> None:
        self._interp.invoke()

    def get_outputs(self) -> list[np.ndarray]:
        return [np.array(self._interp.get_output(i)) for i in range(len(self.outputs))]


def _count_io(path: str) -> tuple[int, int]:
    """Counts subgraph 0 inputs and outputs by reading the flatbuffer with the TFLM schema."""
    from tflite_micro.python.tflite_micro import runtime

    with open(path, "rb") as f:
        buf = bytearray(f.read())
    model = runtime.convert_bytearray_to_object(buf)
    graph = model.subgraphs[0]
    return len(graph.inputs), len(graph.outputs)


class TFLMRuntime(Runtime):
    name = "tflm"
    formats = ("tflite",)

    @classmethod
    def status(cls) -> RuntimeStatus:
        try:
            from tflite_micro.python.tflite_micro import runtime  # noqa: F401
        except Exception as exc:
            return RuntimeStatus(cls.name, False, reason=f"tflite-micro not importable ({exc})")

        version = installed_version("tflite-micro")
        return RuntimeStatus(
            cls.name, True, version=version, module="tflite_micro", accelerators=("cpu",)
        )

    def load(
        self, path: str, threads: int = 0, accelerator: str = "", arena_bytes: int = 0
    ) -> LoadedModel:
        from tflite_micro.python.tflite_micro import runtime

        arena = arena_bytes or DEFAULT_ARENA_BYTES
        interpreter = runtime.Interpreter.from_file(path, arena_size=arena)
        n_in, n_out = _count_io(path)
        return TFLMModel(interpreter, n_in, n_out)
