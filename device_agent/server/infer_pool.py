"""Runs Infer requests in a long-lived child process that keeps recently used models loaded.

A model that crashes the runtime takes down only that child; the next request starts a
new one. Inputs arrive as floats (or the model's dtype with `raw`), are quantized per the
input's scale/zero point, split to the model's fixed batch size when needed, and outputs
are dequantized back to float32.

The worker is `python -m device_agent.server.infer_pool`, started with subprocess under the
agent's ChildLimits (resource limits, and the `--run-as` user). It talks to the agent over its
stdin/stdout in frames of a JSON header and a protobuf payload (InferRequest / InferReply
tensors): nothing is unpickled on either side, so a worker that a model subverted cannot
make the agent run code either.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO, Optional

import numpy as np

from device_agent.measure import limits as child_limits
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol.tensors import array_to_tensor, tensor_to_array

KEEP_LOADED = 4
"""How many (model, runtime, threads) combinations the worker keeps loaded."""


@dataclass
class InferFailure(Exception):
    kind: str  # "unknown_runtime", "unavailable", "load", "unsafe", "run", "crash", "timeout",
    # "bad_input"
    message: str

    def __str__(self) -> str:
        return self.message


_FRAME = struct.Struct("<II")  # JSON header length, payload length
MAX_HEADER_BYTES = 1 << 20


def _write_frame(out: BinaryIO, header: dict, payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    view = memoryview(_FRAME.pack(len(data), len(payload)) + data + payload)
    while view:  # a raw pipe may take part of a large frame per write
        view = view[out.write(view) or 0 :]
    out.flush()


def _read_exact(fd: int, n: int, deadline: Optional[float]) -> bytes:
    chunks, left = [], n
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: Optional[float] = None) -> tuple[dict, bytes]:
    """Reads one frame; raises EOFError (peer gone), TimeoutError or ValueError (malformed)."""
    header_len, payload_len = _FRAME.unpack(_read_exact(fd, _FRAME.size, deadline))
    if header_len > MAX_HEADER_BYTES:
        raise ValueError(f"frame header of {header_len} bytes")
    header = json.loads(_read_exact(fd, header_len, deadline))
    if not isinstance(header, dict):
        raise ValueError("frame header is not a JSON object")
    return header, _read_exact(fd, payload_len, deadline)


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


def _worker_main(requests: int, replies: BinaryIO) -> None:
    from device_agent.measure.inputs import from_model_output, to_model_input
    from device_agent.runtimes.base import UnsafeModelError
    from device_agent.runtimes.registry import (
        RuntimeUnavailableError,
        UnknownRuntimeError,
        resolve_runtime,
    )

    loaded: OrderedDict = OrderedDict()
    while True:
        try:
            header, payload = _read_frame(requests)
        except EOFError:
            return
        path, fmt, runtime_name = header["path"], header["format"], header["runtime"]
        threads, raw = int(header["threads"]), bool(header["raw"])
        arrays = [tensor_to_array(t) for t in pb.InferRequest.FromString(payload).inputs]
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
                except UnsafeModelError as exc:
                    raise InferFailure("unsafe", f"model refused: {exc}") from None
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
            reply = pb.InferReply(compute_ms=compute_ms)
            reply.outputs.extend(array_to_tensor(np.asarray(o)) for o in outs)
            _write_frame(replies, {"ok": True}, reply.SerializeToString())
        except InferFailure as failure:
            _write_frame(replies, {"ok": False, "kind": failure.kind, "message": failure.message})


class InferPool:
    """One worker process, started on first use, restarted after a crash."""

    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        """Starts the worker now rather than on the first Infer."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        limits = child_limits.current()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "device_agent.server.infer_pool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
            **limits.popen_kwargs(),  # the worker sets its own limits from these first thing
        )

    @property
    def pid(self) -> Optional[int]:
        """The worker's process id, when one is running."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def infer(
        self, path: str, fmt: str, runtime: str, threads: int, arrays: list[np.ndarray], raw: bool
    ) -> tuple[list[np.ndarray], float]:
        """Returns (outputs, compute_ms); raises InferFailure."""
        header = {"path": path, "format": fmt, "runtime": runtime, "threads": threads, "raw": raw}
        request = pb.InferRequest()
        request.inputs.extend(array_to_tensor(np.asarray(a)) for a in arrays)
        with self._lock:
            self._ensure()
            proc = self._proc
            try:
                _write_frame(proc.stdin, header, request.SerializeToString())
                reply, payload = _read_frame(
                    proc.stdout.fileno(), time.monotonic() + self.timeout_s
                )
            except TimeoutError:
                self._restart()
                raise InferFailure(
                    "timeout", f"inference did not finish within {self.timeout_s:g} s"
                ) from None
            except (EOFError, BrokenPipeError, ConnectionResetError, ValueError):
                self._restart()
                code = proc.returncode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise InferFailure("crash", f"inference process died ({how})") from None
        if reply.get("ok"):
            message = pb.InferReply.FromString(payload)
            return [tensor_to_array(t) for t in message.outputs], message.compute_ms
        raise InferFailure(str(reply.get("kind", "run")), str(reply.get("message", "")))

    def _restart(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()

    def close(self) -> None:
        with self._lock:
            self._restart()


def main() -> int:
    """Worker entry: serves requests from stdin until the agent closes it."""
    child_limits.apply_own_limits()
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what runtimes print goes to stderr, never into the reply stream
    sys.stdout = sys.stderr
    _worker_main(sys.stdin.fileno(), replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
