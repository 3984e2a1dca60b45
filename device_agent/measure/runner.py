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
from device_agent.measure.device_state import device_state
from device_agent.measure.options import validate, with_defaults
from device_agent.measure.settle import settle
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

    First the device settles as the options ask (`settle.py`: cooldown, start temperature),
    then a child (the spare, else a new one) gets the job; it pins itself to the CPUs asked.
    The next spare is started only once this child has exited. Every result carries
    `device_state` and the time spent settling (`thermal.cooldown_waited_s`).

    Args:
        model_path: the model file on this device.
        model_format: "tflite", "onnx" or "pt2".
        options: as sent by the host; defaults are filled in here.
        on_progress: called with each progress event.
        cancelled: polled; when it returns True the child is killed (the caller went away).
    """
    options = with_defaults(options)
    problem = validate(options) or _affinity_problem(options)
    if problem:
        return _stamp(_failure(K.ERROR_KIND_BAD_REQUEST, problem), options)
    while not _QUIET.wait(0.05):  # the agent's start-up processes are still running
        if cancelled is not None and cancelled():
            return _stamp(
                _failure(K.ERROR_KIND_BAD_REQUEST, "benchmark cancelled by the caller"), options
            )
    settled = settle(options, on_progress, cancelled)
    if settled.cancelled:
        result = _failure(K.ERROR_KIND_BAD_REQUEST, "benchmark cancelled by the caller")
    else:
        result = _run_child(model_path, model_format, options, on_progress, cancelled)
    result.thermal.cooldown_waited_s = settled.waited_s
    result.warnings[:0] = settled.warnings
    return _stamp(result, options)


def _run_child(
    model_path: str,
    model_format: str,
    options: pb.BenchmarkOptions,
    on_progress: Optional[OnProgress],
    cancelled: Optional[Callable[[], bool]],
) -> pb.BenchmarkResult:
    began = time.monotonic()
    child = _SPARE.take()  # it pins itself to options.cpu_affinity when its job arrives
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
    wall = time.monotonic() - began
    _SPARE.refill()  # the benchmark's process is gone: now the next one may start
    drain.join(timeout=5)

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
    return result


def _affinity_problem(options: pb.BenchmarkOptions) -> str:
    """Why `cpu_affinity` cannot be honoured here: CPUs the agent itself may not use."""
    if not options.cpu_affinity:
        return ""
    if not hasattr(os, "sched_setaffinity"):
        return "options.cpu_affinity: this OS cannot pin a process to CPUs"
    allowed = os.sched_getaffinity(0)
    outside = sorted(set(options.cpu_affinity) - allowed)
    if outside:
        return (
            f"options.cpu_affinity: CPUs {outside} are not available to the agent "
            f"(it may use {sorted(allowed)})"
        )
    return ""


def _stamp(result: pb.BenchmarkResult, options: pb.BenchmarkOptions) -> pb.BenchmarkResult:
    """Fills what every result carries: the options as applied and the device state (a
    child that died before it reported one gets the agent's view: the CPUs it was given)."""
    if not result.HasField("options"):
        result.options.CopyFrom(options)
    if not result.HasField("device_state"):
        cpus = sorted(set(options.cpu_affinity)) or None
        result.device_state.CopyFrom(device_state(cpus))
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
        **limits.popen_kwargs(),  # the child sets its own limits from these first thing
    )
    return child


class _SpareWorker:
    """Keeps one benchmark process started ahead of time (imports done, no job yet).

    `take()` hands out the spare (or starts a process when there is none) and starts nothing
    else; `refill()` starts the next spare once the benchmark that took the last one has
    exited, so no process is started on the device while a benchmark runs, yet a benchmark
    rarely pays interpreter start-up and each one still runs in a process nobody used before.
    Only an agent that called `prime()` keeps a spare: the one-shot `bench` command never
    starts one it would not use.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: Optional[subprocess.Popen] = None
        self._enabled = False

    def take(self) -> subprocess.Popen:
        with self._lock:
            child = self._spare if self._spare is not None and self._spare.poll() is None else None
            self._spare = None
            return child if child is not None else _spawn_worker()

    def refill(self) -> None:
        """Starts the next spare (agents that primed one only); call after a benchmark's child
        has exited."""
        with self._lock:
            if self._enabled and (self._spare is None or self._spare.poll() is not None):
                self._spare = _spawn_worker()

    def prime(self) -> None:
        """Keeps a spare from now on and starts it now (agent start-up), so even the first
        benchmark finds one ready."""
        with self._lock:
            self._enabled = True
        self.refill()

    def close(self) -> None:
        with self._lock:
            self._enabled = False
            if self._spare is not None and self._spare.poll() is None:
                self._spare.stdin.close()
                try:
                    self._spare.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    _kill_group(self._spare)
            self._spare = None


_QUIET = threading.Event()
_QUIET.set()


def hold_benchmarks() -> None:
    """Benchmarks wait (before their child starts) until `release_benchmarks`: the agent's
    start-up starts processes of its own (spare, Infer worker, runtime probe) that must not
    run beside a benchmark."""
    _QUIET.clear()


def release_benchmarks() -> None:
    _QUIET.set()


_SPARE = _SpareWorker()
close_spare_worker = _SPARE.close
prime_spare_worker = _SPARE.prime


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
