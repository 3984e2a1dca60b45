"""Parent side of a benchmark: spawns the child, relays progress, enforces the timeout.

The agent survives anything the child does: a crash (signal, abort, out of memory) or a
hang becomes a result with ERROR_KIND_CRASHED or ERROR_KIND_TIMEOUT and what was seen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Callable, Optional

from google.protobuf import json_format

from device_agent.measure import limits as child_limits
from device_agent.measure.options import validate, with_defaults
from device_agent.protocol import edgeloop_pb2 as pb

K = pb.ErrorKind
OnProgress = Callable[[pb.Progress], None]
STDERR_TAIL_LINES = 20


def _failure(kind: int, message: str) -> pb.BenchmarkResult:
    return pb.BenchmarkResult(error_kind=kind, error_message=message)


def benchmark_in_child(
    model_path: str,
    model_format: str,
    options: pb.BenchmarkOptions,
    on_progress: Optional[OnProgress] = None,
    cancelled: Optional[Callable[[], bool]] = None,
) -> pb.BenchmarkResult:
    """Runs one benchmark in a fresh child process and returns its result (never raises).

    Args:
        model_path: the model file on this device.
        model_format: "tflite", "onnx" or "pt2".
        options: as sent by the host; defaults are filled in here.
        on_progress: called with each progress event.
        cancelled: polled; when it returns True the child is killed (the caller went away).
    """
    options = with_defaults(options)
    problem = validate(options)
    if problem:
        return _failure(K.ERROR_KIND_BAD_REQUEST, problem)
    began = time.monotonic()
    child = _SPARE.take()
    child_limits.limit_cpu(child.pid, child_limits.benchmark_cpu_seconds(options.timeout_seconds))
    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    drain = threading.Thread(target=lambda: stderr_tail.extend(child.stderr), daemon=True)
    drain.start()
    job = {
        "model_path": model_path,
        "model_format": model_format,
        "options": json_format.MessageToDict(options),
    }
    try:
        child.stdin.write(json.dumps(job) + "\n")
        child.stdin.close()
    except BrokenPipeError:
        pass  # the child died before its job arrived: reported below as a crash

    deadline = began + options.timeout_seconds
    killed_for: Optional[str] = None

    def watchdog() -> None:
        nonlocal killed_for
        while child.poll() is None:
            if time.monotonic() > deadline:
                killed_for = "timeout"
            elif cancelled is not None and cancelled():
                killed_for = "cancelled"
            if killed_for:
                _kill_group(child)
                return
            time.sleep(0.05)

    threading.Thread(target=watchdog, daemon=True).start()
    result: Optional[pb.BenchmarkResult] = None
    for line in child.stdout:
        try:
            event = json_format.Parse(line, pb.BenchmarkEvent())
        except json_format.ParseError:
            continue
        if event.HasField("progress") and on_progress is not None:
            on_progress(event.progress)
        elif event.HasField("result"):
            result = event.result
    code = child.wait()
    drain.join(timeout=5)
    wall = time.monotonic() - began

    if killed_for == "timeout":
        result = _failure(
            K.ERROR_KIND_TIMEOUT,
            f"benchmark exceeded its {options.timeout_seconds:g} s timeout and was killed",
        )
    elif killed_for == "cancelled":
        result = _failure(K.ERROR_KIND_BAD_REQUEST, "benchmark cancelled by the caller")
    elif result is None:
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        tail = " | ".join(line.strip() for line in stderr_tail if line.strip())[-800:]
        result = _failure(K.ERROR_KIND_CRASHED, f"benchmark process died ({how}): {tail}")
    result.wall_s = wall
    if not result.HasField("options"):
        result.options.CopyFrom(options)
    return result


def _spawn_worker() -> subprocess.Popen:
    """Starts a benchmark process under the agent's ChildLimits (user, address space, files)."""
    limits = child_limits.current()
    child = subprocess.Popen(
        [sys.executable, "-m", "device_agent.measure.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a kill takes its children too
        **limits.popen_kwargs(),
    )
    limits.apply(child.pid)
    return child


class _SpareWorker:
    """Keeps one benchmark process started ahead of time (imports done, no job yet).

    `take()` hands it out and starts the next one, so a benchmark never pays interpreter
    start-up, yet each benchmark still runs in a process nobody used before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: Optional[subprocess.Popen] = None

    def take(self) -> subprocess.Popen:
        with self._lock:
            child = self._spare if self._spare is not None and self._spare.poll() is None else None
            if child is None:
                child = _spawn_worker()
            self._spare = _spawn_worker()
            return child

    def prime(self) -> None:
        """Starts the spare now (agent start-up), so even the first benchmark finds one ready."""
        with self._lock:
            if self._spare is None or self._spare.poll() is not None:
                self._spare = _spawn_worker()

    def close(self) -> None:
        with self._lock:
            if self._spare is not None and self._spare.poll() is None:
                self._spare.stdin.close()
                try:
                    self._spare.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    _kill_group(self._spare)
            self._spare = None


_SPARE = _SpareWorker()
close_spare_worker = _SPARE.close
prime_spare_worker = _SPARE.prime


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
