"""One benchmark on a DUT, as a BenchmarkResult: the agent (for an attached device) and the
host (transport `serial`) both call `benchmark_dut`.

Sequence: handshake (``name%``, ``profile%``), one input uploaded in ``db`` chunks (made from
the model's input spec like every other benchmark's inputs), a cold ``infer 1 0`` (first
inference), warm-up (``infer 1 W``, then more single runs until `warmup_min_seconds`), then
``infer 1 0`` commands until `min_runs` and `min_seconds` are both reached (or `max_runs`).

Each timed command gives two figures: `latency` is the DUT's own timer (its two
``m-lap-us-`` readings), `host_round_trip` this host's clock from writing the command to
reading ``m-ready`` (wire time both ways, the DUT's printing, parsing). There is no memory or
power figure: the DUT reports none, and no energy meter is read (never invented).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional

from device_agent.measure.inputs import benchmark_inputs
from device_agent.measure.options import validate, with_defaults
from device_agent.measure.stats import HIGH_CV, latency_from_samples
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.runtimes.base import TensorInfo
from device_agent.serial_dut import protocol as p
from device_agent.serial_dut.link import SerialLinkError
from device_agent.serial_dut.model_io import ModelIoError, input_bytes, tflite_io
from device_agent.serial_dut.session import DutSession

DUT_RUNTIME = "mlperf-tiny-dut"
"""BenchmarkResult.runtime of a DUT run; runtime_version is the firmware's profile string."""
TIMER_STEP_WARN = 0.01
"""Warn when the DUT timer's 1 µs step is more than this share of the median time."""

OnProgress = Callable[[pb.Progress], None]


class BenchmarkTimeout(Exception):
    """The run outlasted options.timeout_seconds."""


def benchmark_dut(
    session: DutSession,
    options: pb.BenchmarkOptions,
    model: Optional[bytes] = None,
    on_progress: Optional[OnProgress] = None,
    cancelled: Optional[Callable[[], bool]] = None,
) -> pb.BenchmarkResult:
    """Measures the model compiled into the DUT on `session` (never raises for DUT faults).

    Args:
        session: an open session with the DUT.
        options: as sent; defaults filled in here (`runtime`, `threads`, sensors and the other
            fields that only mean something on a Linux device are ignored).
        model: the .tflite compiled into the DUT: its input spec gives the input bytes. None:
            nothing is uploaded and the DUT runs on the input it holds (a warning says so).
        on_progress: called with "loading", "warmup" and "timed" events.
        cancelled: polled between commands; True ends the run (BAD_REQUEST "cancelled").

    Returns:
        A BenchmarkResult; DUT faults as ERROR_KIND_DEVICE_PROTOCOL (answered outside the
        protocol, refused, silent, port gone) or ERROR_KIND_TIMEOUT (options.timeout_seconds
        ran out while the DUT was still answering).
    """
    options = with_defaults(options)
    result = pb.BenchmarkResult(options=options, runtime=DUT_RUNTIME, started_unix=time.time())
    problem = validate(options)
    if problem:
        result.error_kind, result.error_message = pb.ERROR_KIND_BAD_REQUEST, problem
        return result
    start = time.monotonic()
    clock = _Budget(start + options.timeout_seconds, session)
    try:
        data = _inputs(model, result)
        _run(
            session,
            options,
            data,
            result,
            clock,
            on_progress or (lambda _: None),
            cancelled or (lambda: False),
        )
    except ModelIoError as exc:
        result.error_kind, result.error_message = pb.ERROR_KIND_BAD_REQUEST, str(exc)
    except BenchmarkTimeout:
        result.error_kind = pb.ERROR_KIND_TIMEOUT
        result.error_message = (
            f"{session.port}: the DUT benchmark outlasted its timeout of "
            f"{options.timeout_seconds:g} s"
        )
    except (p.DutProtocolError, SerialLinkError) as exc:
        if isinstance(exc, p.DutTimeoutError) and clock.spent():
            result.error_kind = pb.ERROR_KIND_TIMEOUT
            result.error_message = f"{exc} (the benchmark's {options.timeout_seconds:g} s ran out)"
        else:
            result.error_kind, result.error_message = pb.ERROR_KIND_DEVICE_PROTOCOL, str(exc)
    result.wall_s = time.monotonic() - start
    if result.error_kind != pb.ERROR_KIND_NONE:
        for name in ("latency", "host_round_trip"):
            result.ClearField(name)
    return result


class _Budget:
    """What is left of options.timeout_seconds, as a per-command deadline."""

    def __init__(self, deadline: float, session: DutSession) -> None:
        self.deadline, self.session = deadline, session

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchmarkTimeout()
        return left

    def spent(self) -> bool:
        return time.monotonic() >= self.deadline - 0.01

    def infer_s(self) -> float:
        return min(self.session.timeouts.infer_s, self.left())


def _inputs(model: Optional[bytes], result: pb.BenchmarkResult) -> Optional[bytes]:
    if model is None:
        result.warnings.append(
            "no model given: no input uploaded, the DUT ran on the input it holds"
        )
        return None
    inputs, outputs = tflite_io(model)
    result.inputs.extend(_spec(t) for t in inputs)
    result.outputs.extend(_spec(t) for t in outputs)
    result.memory.model_size_bytes = len(model)
    return input_bytes(benchmark_inputs(inputs))


def _spec(info: TensorInfo) -> pb.TensorSpec:
    spec = pb.TensorSpec(name=info.name, shape=list(info.shape), dtype=info.dtype)
    if info.quantized:
        spec.scale, spec.zero_point = info.scale, info.zero_point
    return spec


def _run(
    session: DutSession,
    options: pb.BenchmarkOptions,
    data: Optional[bytes],
    result: pb.BenchmarkResult,
    clock: _Budget,
    progress: OnProgress,
    cancelled: Callable[[], bool],
) -> None:
    t0 = time.monotonic()

    def event(phase: str, done: int = 0, total: int = 0) -> None:
        progress(pb.Progress(phase=phase, done=done, total=total, elapsed_s=time.monotonic() - t0))
        if cancelled():
            raise _Cancelled()

    try:
        event("loading")
        identity = session.identify()
        result.runtime_version = identity.firmware or identity.vendor
        if data is not None:
            result.load_ms = session.load_input(data).seconds * 1000.0
        clock.left()
        first = session.infer(1, 0, clock.infer_s())
        result.first_inference_ms = first.per_inference_ms
        event("warmup", 0, options.warmup_runs)
        if options.warmup_runs:
            session.infer(1, options.warmup_runs, clock.infer_s())
        while time.monotonic() - t0 < options.warmup_min_seconds:
            session.infer(1, 0, clock.infer_s())
        dut_ms: list[float] = []
        host_ms: list[float] = []
        event("timed", 0, options.min_runs)
        timed_start = time.monotonic()
        while True:
            report = session.infer(1, 0, clock.infer_s())
            dut_ms.append(report.per_inference_ms)
            host_ms.append(session.last.seconds * 1000.0)
            n, window = len(dut_ms), time.monotonic() - timed_start
            if (n >= options.min_runs and window >= options.min_seconds) or (
                options.max_runs and n >= options.max_runs
            ):
                break
            if n % 50 == 0:
                event("timed", n, options.min_runs)
            elif cancelled():
                raise _Cancelled()
        result.timed_window_s = time.monotonic() - timed_start
    except _Cancelled:
        result.error_kind, result.error_message = pb.ERROR_KIND_BAD_REQUEST, "benchmark cancelled"
        return
    result.latency.CopyFrom(latency_from_samples(dut_ms, options.keep_samples))
    result.host_round_trip.CopyFrom(latency_from_samples(host_ms, options.keep_samples))
    _warn(result, session, report)


class _Cancelled(Exception):
    pass


def _warn(result: pb.BenchmarkResult, session: DutSession, last: p.InferReport) -> None:
    lat = result.latency
    if lat.cv > HIGH_CV:
        result.warnings.append(f"high variation on the DUT's timer: CV {lat.cv:.1%}")
    if lat.p50_ms > 0 and 0.001 / lat.p50_ms > TIMER_STEP_WARN:
        result.warnings.append(
            f"the DUT reports {lat.p50_ms * 1000:.0f} µs per inference: its "
            "timer's 1 µs step is over 1% of that"
        )
    if session.retries:
        result.warnings.append(f"{session.retries} garbled DUT replies were sent again")
    if last.notes:
        result.warnings.append(f"the DUT printed: {p.shorten(last.notes)}")
