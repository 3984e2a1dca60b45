"""torch.export programs (.pt2) run with torch, on CUDA when present and asked for."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
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
    installed_version,
)
from device_agent.runtimes.pt2_safety import check_pt2


class TorchModel(LoadedModel):
    def __init__(self, program: Any, device: str) -> None:
        import torch

        self._torch = torch
        self._device = torch.device(device)
        self._module = program.module().to(self._device)
        self._cuda = self._device.type == "cuda"
        self.inputs = []
        for i, spec in enumerate(program.graph_signature.input_specs):
            if spec.kind.name != "USER_INPUT":
                continue
            meta = _placeholder_meta(program, spec.arg.name)
            if meta is None:
                continue
            self.inputs.append(
                TensorInfo(
                    name=spec.arg.name or f"input_{i}",
                    shape=tuple(int(d) if isinstance(d, int) else -1 for d in meta.shape),
                    dtype=str(meta.dtype).replace("torch.", ""),
                )
            )
        self.outputs = []
        self._staged: list[Any] = []
        self._result: Any = None

    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        torch = self._torch
        self._staged = [torch.from_numpy(np.ascontiguousarray(a)).to(self._device) for a in arrays]

    def run(self) -> None:
        with self._torch.inference_mode():
            self._result = self._module(*self._staged)
        if self._cuda:
            self._torch.cuda.synchronize()

    def get_outputs(self) -> list[np.ndarray]:
        result = self._result
        items = list(result) if isinstance(result, (tuple, list)) else [result]
        arrays = [t.detach().to("cpu").numpy().copy() for t in items]
        if not self.outputs:
            self.outputs = [
                TensorInfo(f"output_{i}", tuple(a.shape), a.dtype.name)
                for i, a in enumerate(arrays)
            ]
        return arrays

    def profile_ops(self, inputs: list[np.ndarray], runs: int) -> OpsTable:
        """torch.profiler over `runs` runs of the graph node by node (torch.fx.Interpreter),
        each node inside a `record_function` named after it: its CPU time (the aten op and
        what it calls), with the torch module the node came from (``nn_module_stack``)."""
        torch = self._torch
        from torch.profiler import ProfilerActivity, profile, record_function

        graph_module = self._module
        nodes = [n for n in graph_module.graph.nodes if n.op == "call_function"]
        labels = {node: f"edgeloop.node.{i}" for i, node in enumerate(nodes)}

        class Labelled(torch.fx.Interpreter):
            def run_node(self, n: Any) -> Any:
                label = labels.get(n)
                if label is None:
                    return super().run_node(n)
                with record_function(label):
                    return super().run_node(n)

        staged = [torch.from_numpy(np.ascontiguousarray(a)).to(self._device) for a in inputs]
        interpreter = Labelled(graph_module)
        with torch.inference_mode():
            interpreter.run(*staged)  # warm-up, not profiled
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(runs):
                    interpreter.run(*staged)
        times = {e.key: (e.count, e.cpu_time_total) for e in prof.key_averages()}
        rows = []
        for node in nodes:
            count, total_us = times.get(labels[node], (0, 0.0))
            module = _module_path(node)
            rows.append(
                OpRow(
                    name=f"{module}:{node.name}" if module else node.name,
                    op_type=_op_type(node.target),
                    calls=max(round(count / runs), 1) if count else 0,
                    mean_ms=total_us / runs / 1e3,
                )
            )
        return OpsTable(
            tuple(rows),
            "torch-profiler",
            "node by node (torch.fx.Interpreter) under torch.profiler: each op's CPU time "
            "includes a little interpreter overhead; the plain run is one call",
        )


def _module_path(node: Any) -> str:
    """The innermost torch module a graph node came from (``features.0``), or ""."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path).replace("L['self'].", "").replace("L__self___", "")


def _op_type(target: Any) -> str:
    name = getattr(target, "__name__", None) or str(target)
    overload = getattr(target, "_overloadpacket", None)
    if overload is not None:  # aten.conv2d.default -> aten.conv2d
        return f"aten.{overload.__name__}"
    return name


def _placeholder_meta(program: Any, name: str) -> Any:
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == name:
            return node.meta.get("val")
    return None


_PROBE = (
    "import torch; "
    "print('cuda:' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
)


_PROBE_LOCK = threading.Lock()


def _probe_accelerators() -> tuple[str, ...]:
    """`_probe_once`, one caller at a time: GetInfo during the agent's warm-up waits for the
    warm-up's probe instead of starting a second child that could outlive it (and run beside
    the first benchmark)."""
    with _PROBE_LOCK:
        return _probe_once()


@lru_cache(maxsize=1)
def _probe_once() -> tuple[str, ...]:
    """Whether torch sees a CUDA device: asked of torch itself when this process already
    imported it (a benchmark child), else of a throwaway child interpreter (once per agent)."""
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        return (
            ("cpu", f"cuda:{torch.cuda.get_device_name(0)}")
            if torch.cuda.is_available()
            else ("cpu",)
        )
    from device_agent.measure.limits import current

    try:
        done = subprocess.run(  # under the children's limits and --run-as user, like every child
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=120,
            **current().popen_kwargs(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"edgeloop agent: torch CUDA probe failed ({exc}); torch reports CPU only",
              file=sys.stderr, flush=True)  # fmt: skip
        return ("cpu",)
    if done.returncode != 0:  # a GPU host must not pass for CPU-only without a word
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        print(f"edgeloop agent: torch CUDA probe exited with code {done.returncode} ({last}); "
              "torch reports CPU only", file=sys.stderr, flush=True)  # fmt: skip
        return ("cpu",)
    out = done.stdout.strip()
    return ("cpu", out) if out else ("cpu",)


class TorchRuntime(Runtime):
    name = "torch"
    formats = ("pt2",)

    @classmethod
    def status(cls) -> RuntimeStatus:
        # torch is not imported into the agent process just to answer GetInfo: the
        # version comes from package metadata and CUDA from a one-off child probe.
        if importlib.util.find_spec("torch") is None:
            return RuntimeStatus(cls.name, False, reason="torch is not installed")
        version = installed_version("torch")
        return RuntimeStatus(
            cls.name, True, version=version, module="torch", accelerators=_probe_accelerators()
        )

    def load(self, path: str, threads: int = 0, accelerator: str = "") -> LoadedModel:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        device = accelerator or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("accelerator 'cuda' asked for, but torch sees no CUDA device here")
        program = load_program(path)
        return TorchModel(program, device)


def load_program(path: str) -> Any:
    """torch.export.load of an archive that `check_pt2` accepted, with every torch.load in it
    forced to ``weights_only=True`` (torch's own fallback to ``weights_only=False`` included)."""
    check_pt2(path)
    import torch

    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # read by torch.load at each call
    return torch.export.load(path)
