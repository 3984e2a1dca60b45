"""Runs Infer requests in a long-lived child process that keeps recently used models loaded.

A model that crashes the runtime takes down only that child; the next request starts a
new one. Inputs arrive as floats (or the model's dtype with `raw`), are quantized per the
input's scale/zero point, split to the model's fixed batch size when needed, and outputs
are dequantized back to float32.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np

KEEP_LOADED = 4
"""How many (model, runtime, threads) combinations the worker keeps loaded."""


@dataclass
class InferFailure(Exception):
    kind: str  # "unknown_runtime", "unavailable", "load", "run", "crash", "timeout", "bad_input"
    message: str

    def __str__(self) -> str:
        return self.message


def _run_batched(model, arrays: list[np.ndarray]) -> list[np.ndarray]:
    specs = model.inputs
    n = arrays[0].shape[0] if arrays[0].ndim else 1
    fixed = specs[0].shape[0] if specs[0].shape else -1
    if fixed > 0 and n != fixed and n % fixed == 0:
        chunks = [[a[i : i + fixed] for a in arrays] for i in range(0, n, fixed)]
    else:
        chunks = [arrays]
    per_output: list[list[np.ndarray]] = []
    for chunk in chunks:
        model.set_inputs(chunk)
        model.run()
        outs = model.get_outputs()
        if not per_output:
            per_output = [[] for _ in outs]
        for slot, out in zip(per_output, outs):
            slot.append(out)
    return [np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0] for parts in per_output]


def _worker_main(conn) -> None:
    from device_agent.measure.inputs import from_model_output, to_model_input
    from device_agent.runtimes.registry import (
        RuntimeUnavailableError,
        UnknownRuntimeError,
        resolve_runtime,
    )

    loaded: OrderedDict = OrderedDict()
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        path, fmt, runtime_name, threads, arrays, raw = request
        key = (path, runtime_name, threads)
        try:
            model = loaded.get(key)
            if model is None:
                try:
                    runtime = resolve_runtime(runtime_name, fmt)
                except UnknownRuntimeError as exc:
                    raise InferFailure("unknown_runtime", str(exc)) from None
                except RuntimeUnavailableError as exc:
                    raise InferFailure("unavailable", str(exc)) from None
                try:
                    model = runtime.load(path, threads=threads)
                except Exception as exc:
                    raise InferFailure(
                        "load", f"could not load the model: {type(exc).__name__}: {exc}"
                    ) from None
                loaded[key] = model
                while len(loaded) > KEEP_LOADED:
                    loaded.popitem(last=False)[1].close()
            loaded.move_to_end(key)
            if len(arrays) != len(model.inputs):
                raise InferFailure(
                    "bad_input", f"model takes {len(model.inputs)} inputs, got {len(arrays)}"
                )
            if not raw:
                arrays = [to_model_input(a, s) for a, s in zip(arrays, model.inputs)]
            t0 = time.perf_counter()
            try:
                outs = _run_batched(model, arrays)
            except InferFailure:
                raise
            except Exception as exc:
                raise InferFailure(
                    "run", f"inference failed: {type(exc).__name__}: {exc}"
                ) from None
            compute_ms = (time.perf_counter() - t0) * 1e3
            if not raw:
                outs = [from_model_output(o, s) for o, s in zip(outs, model.outputs)]
            conn.send(("ok", outs, compute_ms))
        except InferFailure as failure:
            conn.send(("error", failure.kind, failure.message))


class InferPool:
    """One worker process, started on first use, restarted after a crash."""

    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._proc: Optional[mp.Process] = None
        self._conn = None

    def start(self) -> None:
        """Starts the worker now rather than on the first Infer."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def infer(
        self, path: str, fmt: str, runtime: str, threads: int, arrays: list[np.ndarray], raw: bool
    ) -> tuple[list[np.ndarray], float]:
        """Returns (outputs, compute_ms); raises InferFailure."""
        with self._lock:
            self._ensure()
            try:
                self._conn.send((path, fmt, runtime, threads, arrays, raw))
                if not self._conn.poll(self.timeout_s):
                    self._restart()
                    raise InferFailure(
                        "timeout", f"inference did not finish within {self.timeout_s:g} s"
                    )
                reply = self._conn.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError):
                code = self._proc.exitcode if self._proc else None
                self._restart()
                raise InferFailure("crash", f"inference process died (exit code {code})") from None
        if reply[0] == "ok":
            return reply[1], reply[2]
        raise InferFailure(reply[1], reply[2])

    def _restart(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        self._proc = None

    def close(self) -> None:
        with self._lock:
            self._restart()
