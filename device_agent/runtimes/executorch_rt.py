"""ExecuTorch programs (.pte) run with executorch's C++ runtime through its Python bindings.

What a `.pte` can do when loaded: it is a flatbuffer program — a list of instructions that call
operators by name, plus constant tensors and delegate payloads — executed by the ExecuTorch
runtime. It carries no Python code and nothing is unpickled. It can only call the kernels
registered in the installed runtime (the pip wheel's portable and quantized aten kernels, and
the backends it was built with: `Runtime.get().backend_registry`, XNNPACK among them); an
operator or backend the runtime lacks fails the load. The runtime verifies the program's
internal consistency (`Verification.InternalConsistency`) before running it, so a malformed
file is refused with an error (LOAD_FAILED), not run.

The bindings module is imported directly (`executorch.extension.pybindings._C`, after torch,
which provides libtorch) rather than through `executorch.runtime`, whose import pulls in the
whole exporter stack (several seconds, and torchao) that running a program does not need.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np

from device_agent.runtimes.base import (
    LoadedModel,
    OpRow,
    OpsTable,
    Runtime,
    RuntimeStatus,
    TensorInfo,
    installed_version,
)

# executorch ScalarType codes (executorch/schema/scalar_type.fbs) -> numpy dtype names
_SCALAR_TYPES = {
    0: "uint8",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "int64",
    5: "float16",
    6: "float32",
    7: "float64",
    11: "bool",
}
ETDUMP_BUFFER_BYTES = 0  # no intermediate outputs: the profile needs the events only
# spans that are not operators: program set-up, and the whole call
_NOT_OPS = {"Method::init", "Program::load_method", "Method::execute"}
_NATIVE = "native_call_"  # ETDump's name for a kernel run outside any delegate


def _bindings() -> Any:
    import importlib

    import torch  # noqa: F401 - first: loads libtorch, which the bindings link against

    return importlib.import_module("executorch.extension.pybindings._C")


def _load(path: str, etdump: bool = False) -> Any:
    """Loads and verifies the program; RuntimeError (LOAD_FAILED) for a malformed file."""
    bindings = _bindings()
    return bindings._load_program(
        path,
        enable_etdump=etdump,
        debug_buffer_size=ETDUMP_BUFFER_BYTES,
        program_verification=bindings.Verification.InternalConsistency,
        data_path=None,
    )


def _tensor_info(meta: Any, name: str) -> TensorInfo:
    dtype = _SCALAR_TYPES.get(int(meta.dtype()), f"scalar_type_{int(meta.dtype())}")
    return TensorInfo(name=name, shape=tuple(int(d) for d in meta.sizes()), dtype=dtype)


class ExecuTorchModel(LoadedModel):
    def __init__(self, path: str, program: Any) -> None:
        import torch

        self._torch = torch
        self._path = path
        self._program = program  # the method refers to the program: keep both alive
        if program.num_methods() < 1:
            raise ValueError(f"{os.path.basename(path)}: the program has no methods")
        self._method_name = "forward" if _has_forward(program) else program.get_method_name(0)
        self._method = program.load_method(self._method_name)
        meta = self._method.method_meta()
        self.inputs = [
            _tensor_info(meta.input_tensor_meta(i), f"input_{i}") for i in range(meta.num_inputs())
        ]
        self.outputs = [
            _tensor_info(meta.output_tensor_meta(i), f"output_{i}")
            for i in range(meta.num_outputs())
        ]
        self._staged: list[Any] = []

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        torch = self._torch
        self._staged = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        self._method.set_inputs(self._staged)

    def run(self) -> None:
        self._method.execute()

    def get_outputs(self) -> list[np.ndarray]:
        return [t.numpy().copy() for t in self._method.get_outputs(clone_outputs=True)]

    def profile_ops(self, inputs: list[np.ndarray], runs: int) -> OpsTable:
        """ETDump of `runs` executions of a second copy of the program (event tracing on)."""
        from device_agent.runtimes.etdump import profile_events

        program = _load(self._path, etdump=True)
        if not program.has_etdump():
            return OpsTable((), "etdump", "this executorch build has no event tracer (ETDump)")
        method = program.load_method(self._method_name)
        method.set_inputs([self._torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
        for _ in range(runs + 1):  # the first call initialises the delegate: dropped below
            method.execute()
        with tempfile.TemporaryDirectory(prefix="edgeloop-etdump-") as tmp:
            dump = os.path.join(tmp, "run.etdp")
            program.write_etdump_result_to_file(dump, os.path.join(tmp, "debug.bin"))
            with open(dump, "rb") as f:
                events = profile_events(f.read())
        ends = [i for i, e in enumerate(events) if e.name == "Method::execute"]
        skip = ends[0] + 1 if len(ends) > runs else 0  # events up to the first call's end
        return _ops_table(events[skip:], runs)


def _has_forward(program: Any) -> bool:
    return any(program.get_method_name(i) == "forward" for i in range(program.num_methods()))


def _ops_table(events: list, runs: int) -> OpsTable:
    """Rows from ETDump events: each delegate's own ops (XNNPACK names them, e.g.
    ``Convolution (NHWC, F32) IGEMM #1``) and the kernels run outside any delegate
    (``native_call_<op>``). A DELEGATE_CALL or OPERATOR_CALL (a span around the ones inside
    it) is a row only when nothing was logged inside it."""
    inner = any(e.in_delegate for e in events)
    native = any(e.name.startswith(_NATIVE) for e in events)
    delegates = {e.instruction_id for e in events if e.in_delegate}
    totals: OrderedDict[str, list] = OrderedDict()
    for event in events:
        if event.name in _NOT_OPS:
            continue
        if (event.name == "DELEGATE_CALL" and inner) or (event.name == "OPERATOR_CALL" and native):
            continue
        name = event.delegate_debug_id_str or event.name or f"instruction {event.instruction_id}"
        if event.in_delegate and len(delegates) > 1:  # XNNPACK numbers ops per delegate
            name = f"{name} (call {event.instruction_id})"
        entry = totals.setdefault(name, [0, 0, _op_type(event)])
        entry[0] += 1
        entry[1] += max(event.end - event.start, 0)
    rows = tuple(
        OpRow(
            name=name,
            op_type=op_type,
            calls=max(round(count / runs), 1),
            mean_ms=ticks / runs / 1e6,  # ticks are nanoseconds on Linux
        )
        for name, (count, ticks, op_type) in totals.items()
    )
    note = (
        "XNNPACK times its ops at microsecond resolution (shorter ones show 0) and names them "
        "itself, not by the torch module they came from"
        if inner
        else ""
    )
    return OpsTable(rows, "etdump", note)


def _op_type(event: Any) -> str:
    if event.delegate_debug_id_str:
        return event.delegate_debug_id_str.rsplit(" #", 1)[0]  # XNNPACK's op kind
    if event.name.startswith(_NATIVE):
        return "aten::" + event.name[len(_NATIVE) :]
    return event.name


class ExecuTorchRuntime(Runtime):
    name = "executorch"
    formats = ("pte",)

    @classmethod
    def status(cls) -> RuntimeStatus:
        # neither executorch nor torch is imported into the agent process to answer GetInfo
        if importlib.util.find_spec("executorch") is None:
            return RuntimeStatus(cls.name, False, reason="executorch is not installed")
        if importlib.util.find_spec("torch") is None:
            return RuntimeStatus(cls.name, False, reason="executorch needs torch (libtorch)")
        version = installed_version("executorch")
        return RuntimeStatus(
            cls.name, True, version=version, module="executorch", accelerators=("cpu",)
        )

    def load(self, path: str, threads: int = 0, accelerator: str = "") -> LoadedModel:
        if accelerator not in ("", "cpu"):
            raise RuntimeError(f"accelerator {accelerator!r}: the executorch runtime runs on cpu")
        with open(path, "rb") as f:
            head = f.read(8)
        if head[4:6] != b"ET":
            raise ValueError(f"{os.path.basename(path)}: not an ExecuTorch program (no ET header)")
        bindings = _bindings()
        if threads > 0:
            bindings._unsafe_reset_threadpool(threads)
        return ExecuTorchModel(path, _load(path))
