"""A fork server for benchmark children: `python -m device_agent.measure.zygote --control-fd N`.

The agent starts one zygote when it starts (and again after a benchmark, should it have died),
never while a benchmark runs. The zygote sets the children's limits on itself (it was started
as the ``--run-as`` user with `ChildLimits.popen_kwargs`, so it never holds root), imports what
every benchmark needs (the harness and worker, numpy, protobuf and its JSON, LiteRT's
interpreter) and then waits. For
each benchmark the agent sends it three pipe ends (the child's stdin, stdout, stderr) over a
Unix socket; the zygote forks, and the child starts a session of its own, puts the pipes on
fds 0-2 and runs `worker.serve_one_job` exactly as a spawned worker would (CPU limit from its
job's timeout, CPU pinning, then the benchmark). So each benchmark still runs in a process
nobody used before — no model is ever loaded in the zygote — but it starts in ~10 ms instead
of paying an interpreter start and ~300 ms of imports.

Forking a process that runs threads is unsafe (a lock held by another thread stays held in the
child), so the zygote imports only modules that start none, and checks: measured here,
numpy starts an OpenBLAS pool at import unless `OPENBLAS_NUM_THREADS=1` (set for the
import only; the benchmark never uses numpy's BLAS), onnxruntime starts a thread at import
(left out: ONNX children import it themselves), torch starts none but costs 1.5 s and
~300 MB (left out: torch children import it themselves). If the zygote finds more than one
thread after its imports, it says "unsafe" and exits, and the agent spawns workers instead.

Messages on the control socket (SOCK_SEQPACKET, one message each):
    zygote -> agent  ``ready`` | ``unsafe <why>``   once, after the imports
    agent  -> zygote ``fork`` with 3 fds            one per benchmark
    zygote -> agent  ``pid <pid>``                  the child forked for that request
    zygote -> agent  ``exit <pid> <code>``          when it ends (code as Popen.returncode)
The zygote exits when the agent closes its end, and kills the children still running then.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys

PRELOAD_RUNTIMES = ("tflite",)
"""Runtimes whose modules start no thread at import (see the module docstring)."""
MESSAGE_BYTES = 256


def thread_count() -> int:
    """Threads of this process (Linux /proc; 1 where it cannot be read)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def preload() -> None:
    """Imports what a benchmark child needs before its job, starting no thread."""
    had = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # numpy's BLAS would start a pool at import
    try:
        import numpy  # noqa: F401

        from device_agent.measure import harness, worker  # noqa: F401 (worker: json_format)
        from device_agent.runtimes.registry import runtime_class

        for name in PRELOAD_RUNTIMES:
            runtime_class(name).status()  # imports the module and caches its version
    finally:
        if had is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = had


def _child(fds: list[int], keep_closed: list[int]) -> None:
    """In the forked child: becomes a fresh benchmark process and never returns."""
    code = 1
    try:
        os.setsid()  # a process group of its own: the agent's kill takes its children too
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in [*fds, *keep_closed]:
            os.close(fd)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
        from device_agent.measure.worker import serve_one_job

        code = serve_one_job()
    except BaseException:  # noqa: BLE001 - nothing may return into the zygote's loop
        import traceback

        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(control: socket.socket) -> int:
    """Forks a child per request until the agent closes the socket."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through wake_w
    running: set[int] = set()

    def reap() -> None:
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            running.discard(pid)
            control.send(f"exit {pid} {os.waitstatus_to_exitcode(status)}".encode())

    try:
        while True:
            ready, _, _ = select.select([control, wake_r], [], [])
            if wake_r in ready:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                reap()
            if control in ready:
                message, fds, _, _ = socket.recv_fds(control, MESSAGE_BYTES, 3)
                if not message:
                    return 0  # the agent is gone or closed us
                if message != b"fork" or len(fds) != 3:
                    for fd in fds:
                        os.close(fd)
                    print(f"zygote: unexpected message {message[:40]!r}", file=sys.stderr)
                    continue
                pid = os.fork()
                if pid == 0:
                    _child(fds, [control.fileno(), wake_r, wake_w])
                for fd in fds:
                    os.close(fd)
                running.add(pid)
                control.send(f"pid {pid}".encode())
            reap()
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        for pid in running:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    from device_agent.measure.limits import apply_own_limits

    apply_own_limits()  # before anything is imported; every child inherits them
    parser = argparse.ArgumentParser(description="fork server for benchmark children")
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    try:
        preload()
    except Exception as exc:  # noqa: BLE001 - reported to the agent, which spawns instead
        control.send(f"unsafe preload failed: {type(exc).__name__}: {exc}"[:200].encode())
        return 3
    threads = thread_count()
    if threads != 1:
        control.send(f"unsafe {threads} threads after the imports; forking is unsafe".encode())
        return 3
    control.send(b"ready")
    return serve(control)


if __name__ == "__main__":
    sys.exit(main())
