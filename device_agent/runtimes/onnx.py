"""ONNX models via onnxruntime (CPU, or the providers the build offers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from device_agent.runtimes.base import LoadedModel, Runtime, RuntimeStatus, TensorInfo
from device_agent.runtimes.onnx_safety import check_onnx

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorInfo(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))


class OnnxModel(LoadedModel):
    def __init__(self, session: Any) -> None:
        self._session = session
        self.inputs = [_info(a) for a in session.get_inputs()]
        self.outputs = [_info(a) for a in session.get_outputs()]
        self._feeds: dict[str, np.ndarray] = {}
        self._result: list[np.ndarray] = []

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        self._feeds = {spec.name: array for spec, array in zip(self.inputs, arrays)}

    def run(self) -> None:
        self._result = self._session.run(None, self._feeds)

    def get_outputs(self) -> list[np.ndarray]:
        return [np.array(r) for r in self._result]


class OnnxRuntime(Runtime):
    name = "onnx"
    formats = ("onnx",)

    @classmethod
    def status(cls) -> RuntimeStatus:
        try:
            import onnxruntime as ort
        except Exception as exc:
            return RuntimeStatus(cls.name, False, reason=f"onnxruntime not importable ({exc})")
        providers = tuple(ort.get_available_providers())
        return RuntimeStatus(
            cls.name, True, version=ort.__version__, module="onnxruntime", accelerators=providers
        )

    def load(self, path: str, threads: int = 0, accelerator: str = "") -> LoadedModel:
        check_onnx(path)  # no external data: the runtime opens no file but this one
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if accelerator == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        return OnnxModel(ort.InferenceSession(path, sess_options=options, providers=providers))
