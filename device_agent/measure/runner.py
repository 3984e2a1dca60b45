"""Parent side of a benchmark: spawns the child, relays progress, enforces the timeout.

The agent survives anything the child does: a crash (signal, abort, out of memory) or a
hang becomes a result with ERROR_KIND_CRASHED or ERROR_KIND_TIMEOUT and what was seen.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any, Optional

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


class _ForkedChild:
    """A benchmark child forked by the zygote, with the part of Popen's interface the runner
    uses (pid, stdin, stdout, stderr, poll, wait, kill). Its exit status comes from the
    zygote, whose child it is."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stdin: Optional[IO[str]] = None
        self.stdout: Optional[IO[str]] = None
        self.stderr: Optional[IO[str]] = None
        self.returncode: Optional[int] = None
        self._done = threading.Event()

    def exited(self, code: int) -> None:
        self.returncode = code
        self._done.set()

    def poll(self) -> Optional[int]:
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(f"benchmark child {self.pid}", timeout or 0)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _Zygote:
    """The agent's side of the fork server (`zygote.py`): starts it, asks it for children,
    and hears when they exit."""

    READY_TIMEOUT_S = 120.0
    """How long a benchmark waits for a zygote still doing its imports (it started after the
    previous benchmark because the one before had died)."""
    FORK_TIMEOUT_S = 30.0
    """A fork takes milliseconds; this only bounds a zygote that stopped answering."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "device_agent.measure.zygote",
                 "--control-fd", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                **child_limits.current().popen_kwargs(),  # its user and limits: the children's
            )  # fmt: skip
        finally:
            theirs.close()
        self._control = ours
        self._ready = threading.Event()
        self.problem = ""  # why it cannot fork ("" while it can)
        self.unsafe = False  # it found threads after its imports: starting another won't help
        self._closing = False
        self._forked: queue.Queue[Optional[_ForkedChild]] = queue.Queue()
        self._children: dict[int, _ForkedChild] = {}
        threading.Thread(target=self._listen, name="zygote-listener", daemon=True).start()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout) and not self.problem

    @property
    def alive(self) -> bool:
        return not (self._ready.is_set() and self.problem) and self.process.poll() is None

    def fork(self) -> Optional[_ForkedChild]:
        """A fresh benchmark child with its pipes, or None when the zygote cannot give one."""
        if not self.wait_ready(self.READY_TIMEOUT_S):
            return None
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        ours = (stdin_w, stdout_r, stderr_r)
        try:
            socket.send_fds(self._control, [b"fork"], [stdin_r, stdout_w, stderr_w])
            child = self._forked.get(timeout=self.FORK_TIMEOUT_S)
        except (OSError, queue.Empty) as exc:
            child = None
            self._fail(f"no child forked: {exc!r}")
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)  # the child holds them now
        if child is None:
            for fd in ours:
                os.close(fd)
            return None
        child.stdin = os.fdopen(stdin_w, "w", encoding="utf-8")
        child.stdout = os.fdopen(stdout_r, encoding="utf-8", errors="replace")
        child.stderr = os.fdopen(stderr_r, encoding="utf-8", errors="replace")
        return child

    def _listen(self) -> None:
        try:
            while True:
                message = self._control.recv(256).decode(errors="replace")
                if not message:
                    break
                word, _, rest = message.partition(" ")
                if word == "ready":
                    self._ready.set()
                elif word == "unsafe":
                    self.unsafe = True
                    self._fail(rest)
                elif word == "pid":
                    child = _ForkedChild(int(rest))
                    self._children[child.pid] = child
                    self._forked.put(child)
                elif word == "exit":
                    pid, code = (int(x) for x in rest.split())
                    child = self._children.pop(pid, None)
                    if child is not None:
                        child.exited(code)
        except OSError:
            pass
        self._fail(self.problem or "the zygote exited")
        for child in list(self._children.values()):  # orphans: nobody reports their exit
            _kill_group(child)
            child.exited(-signal.SIGKILL)
        self._children.clear()

    def _fail(self, why: str) -> None:
        if not self.problem:
            self.problem = why
            if self._closing:
                return self._release_waiters()
            print(f"edgeloop agent: benchmark zygote unusable ({why}); benchmarks spawn "
                  "a worker process instead until one is ready again", file=sys.stderr,
                  flush=True)  # fmt: skip
        self._release_waiters()

    def _release_waiters(self) -> None:
        self._ready.set()
        self._forked.put(None)

    def close(self) -> None:
        self._closing = True
        try:
            self._control.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._control.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(self.process)
            self.process.wait()


class _SpareWorker:
    """Hands out benchmark processes without starting one while a benchmark runs.

    An agent that called `prime()` keeps a zygote (`zygote.py`): a process that did the
    imports once and forks each benchmark's child on request, so every benchmark runs in a
    process nobody used before yet pays neither interpreter start-up nor imports. It is
    started at `prime()` (agent start-up) and again by `refill()` (after a benchmark's child
    has exited) if it died; `take()` only forks. Without a zygote (the one-shot `bench`
    command, or one that proved unusable) `take()` spawns a worker
    (`python -m device_agent.measure.worker`) for the benchmark.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zygote: Optional[_Zygote] = None
        self._enabled = False

    def take(self) -> Any:
        with self._lock:
            if self._zygote is not None:
                child = self._zygote.fork()
                if child is not None:
                    return child
            return _spawn_worker()

    def refill(self) -> None:
        """Starts a zygote again if it died (agents that primed one only); call after a
        benchmark's child has exited."""
        with self._lock:
            if not self._enabled or (self._zygote is not None and self._zygote.alive):
                return
            if self._zygote is not None and self._zygote.unsafe:
                return  # it would be just as unusable again
            if self._zygote is not None:
                self._zygote.close()
            self._zygote = _Zygote()

    def prime(self) -> None:
        """Keeps a zygote from now on and starts it now (agent start-up), returning once its
        imports are done, so even the first benchmark finds it ready."""
        with self._lock:
            self._enabled = True
        self.refill()
        zygote = self._zygote
        if zygote is not None:
            zygote.wait_ready(_Zygote.READY_TIMEOUT_S)

    def close(self) -> None:
        with self._lock:
            self._enabled = False
            if self._zygote is not None:
                self._zygote.close()
            self._zygote = None


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


def _kill_group(child: Any) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
