"""ONNX models via onnxruntime (CPU, or the providers the build offers)."""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable
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
    def __init__(self, session: Any, new_session: Callable[[bool], Any]) -> None:
        self._session = session
        self._new_session = new_session  # (profiling) -> another session of the same model
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

    def profile_ops(self, inputs: list[np.ndarray], runs: int) -> OpsTable:
        """ONNX Runtime's profiler on a second session: each node's kernel time per run."""
        session = self._new_session(True)
        feeds = {spec.name: array for spec, array in zip(self.inputs, inputs)}
        session.run(None, feeds)  # the first run (allocations) is not counted: see below
        for _ in range(runs):
            session.run(None, feeds)
        trace = session.end_profiling()
        try:
            with open(trace) as f:
                events = json.load(f)
        finally:
            os.unlink(trace)
        return _ops_table(events, runs)


def _ops_table(events: list[dict], runs: int) -> OpsTable:
    """Node kernel events (``cat`` Node, name ``<node>_kernel_time``, ``dur`` in µs) of the
    last `runs` runs (the trace also holds the warm-up run, dropped here)."""
    kernels = [
        e
        for e in events
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
    ]
    per_node: OrderedDict[str, list] = OrderedDict()
    for event in kernels:
        name = event["name"][: -len("_kernel_time")]
        entry = per_node.setdefault(name, [event.get("args", {}).get("op_name", ""), []])
        entry[1].append(float(event.get("dur", 0)))
    rows = []
    for name, (op_type, durations) in per_node.items():
        calls = max(len(durations) // (runs + 1), 1)
        kept = durations[-calls * runs :]  # the timed runs only
        rows.append(OpRow(name, op_type, calls, sum(kept) / runs / 1e3))
    return OpsTable(tuple(rows), "onnxruntime-profiler")


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

        providers = ["CPUExecutionProvider"]
        if accelerator == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")

        def new_session(profiling: bool = False) -> Any:
            options = ort.SessionOptions()
            if threads > 0:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            options.log_severity_level = 3
            if profiling:
                options.enable_profiling = True
                options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "edgeloop-ort")
            return ort.InferenceSession(path, sess_options=options, providers=providers)

        return OnnxModel(new_session(), new_session)
