"""Child-process entry for one benchmark: `python -m device_agent.measure.worker`.

The process imports what every benchmark needs, then waits for ONE job on stdin (a JSON line:
model_path, model_format, options), so the agent can start it ahead of time and a benchmark
does not pay for interpreter start-up. It writes BenchmarkEvent JSON lines to the stdout it
was started with; anything a runtime prints goes to stderr instead, so the event stream stays
clean. Failures become a result with an ErrorKind, never a traceback on the stream. Each
process serves exactly one benchmark, so every benchmark still runs in a fresh process.
"""

from __future__ import annotations

import os
import sys
import traceback

from google.protobuf import json_format

from device_agent.protocol import edgeloop_pb2 as pb

K = pb.ErrorKind


def _event_stream():
    """Keeps the original stdout for events and points fd 1 at stderr for everyone else."""
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(events_fd, "w", buffering=1)


def classify(exc: BaseException, phase: str) -> int:
    """Maps a failure to an ErrorKind from its type and the phase it happened in."""
    from device_agent.measure.real_inputs import SamplesError
    from device_agent.runtimes.base import UnsafeModelError
    from device_agent.runtimes.registry import RuntimeUnavailableError, UnknownRuntimeError

    if isinstance(exc, UnsafeModelError):
        return K.ERROR_KIND_UNSAFE_MODEL
    if isinstance(exc, SamplesError):  # the request's samples do not fit, not the model
        return K.ERROR_KIND_BAD_REQUEST
    if isinstance(exc, UnknownRuntimeError):
        return K.ERROR_KIND_UNKNOWN_RUNTIME
    if isinstance(exc, RuntimeUnavailableError):
        return K.ERROR_KIND_RUNTIME_UNAVAILABLE
    if phase in ("", "arena") and isinstance(exc, (LookupError, ValueError)):
        return K.ERROR_KIND_BAD_REQUEST
    if phase in ("", "arena", "loading"):
        return K.ERROR_KIND_LOAD_FAILED
    return K.ERROR_KIND_RUN_FAILED


def _device_state() -> pb.DeviceState:
    from device_agent.measure.device_state import device_state

    return device_state()


def _pin(cpus) -> None:
    from device_agent.measure.device_state import pin

    pin(cpus)


def main() -> int:
    """A spawned worker: limits first, then the imports, then one job."""
    from device_agent.measure.limits import apply_own_limits

    apply_own_limits()  # before any runtime is imported or any model seen
    return serve_one_job()


def serve_one_job() -> int:
    """Waits for one job on stdin and writes its events to stdout (see the module docstring).

    Also the body of a child forked by the zygote (`zygote.py`), which set the limits before
    its imports and put the child's pipes on fds 0-2."""
    import json

    from device_agent.measure.limits import limit_own_cpu

    stream = _event_stream()
    from device_agent.measure.harness import run_benchmark  # imported before the job arrives

    line = sys.stdin.readline()
    if not line:
        return 0  # the agent shut down before giving this spare worker a job
    job = json.loads(line)
    model_path, model_format = job["model_path"], job["model_format"]
    options = json_format.ParseDict(job["options"], pb.BenchmarkOptions())
    limit_own_cpu(options.timeout_seconds)
    phase = ""

    def emit(progress: pb.Progress) -> None:
        nonlocal phase
        phase = progress.phase
        stream.write(
            json_format.MessageToJson(pb.BenchmarkEvent(progress=progress), indent=None) + "\n"
        )

    try:
        _pin(options.cpu_affinity)  # before the runtime starts its threads
        result = run_benchmark(model_path, model_format, options, emit)
    except Exception as exc:  # every failure is reported as data
        traceback.print_exc(file=sys.stderr)
        message = f"{type(exc).__name__}: {exc}".strip()
        result = pb.BenchmarkResult(error_kind=classify(exc, phase), error_message=message[:2000])
        result.device_state.CopyFrom(_device_state())
    stream.write(json_format.MessageToJson(pb.BenchmarkEvent(result=result), indent=None) + "\n")
    stream.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
