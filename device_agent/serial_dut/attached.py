"""The agent's attached DUTs (`serve --serial-dut PORT[:BAUD]`): listed in GetInfo, benchmarked
when a BenchmarkRequest names one in `target`.

A DUT run never touches the agent's benchmark queue (that is this device's CPU): it runs in a
worker thread of its own, one at a time per port (a per-port lock), and streams the same
events as any benchmark. A request with a target does not take part in job-id reattach.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import grpc

from device_agent.measure.options import validate, with_defaults
from device_agent.protocol import ERROR_KIND_METADATA
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.serial_dut.bench import benchmark_dut
from device_agent.serial_dut.link import SerialLinkError, parse_port_spec
from device_agent.serial_dut.scan import ProbeResult, probe, usb_vid_pid_of
from device_agent.serial_dut.session import DutSession, DutTimeouts

KIND = "mlperf-tiny-dut"
PROBE_MAX_AGE_S = 10.0
"""GetInfo reuses a handshake this recent instead of talking to the DUT again."""
PROBE_WAIT_S = 3.0
"""GetInfo waits this long for a handshake another GetInfo is running on the same port."""


@dataclass
class AttachedDut:
    """One DUT on one of this agent's serial ports."""

    port: str
    baud: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_probe: Optional[ProbeResult] = None
    probed_at: float = 0.0
    usb_vid_pid: str = ""
    running: bool = False  # a benchmark holds the port

    @property
    def id(self) -> str:
        return f"serial:{self.port}"

    def describe(self) -> pb.AttachedDevice:
        """Its GetInfo entry; handshakes again when the last one is old and the port is free."""
        fresh = time.monotonic() - self.probed_at < PROBE_MAX_AGE_S
        busy = self.running
        # another GetInfo may be probing: wait for it (a benchmark is not waited for)
        if not fresh and not busy and self.lock.acquire(timeout=PROBE_WAIT_S):
            try:
                if time.monotonic() - self.probed_at >= PROBE_MAX_AGE_S:
                    self.last_probe = probe(self.port, self.baud)
                    self.probed_at = time.monotonic()
            finally:
                self.lock.release()
        busy = busy or self.running
        entry = pb.AttachedDevice(
            id=self.id, kind=KIND, port=self.port, baud=self.baud, usb_vid_pid=self.usb_vid_pid
        )
        found = self.last_probe
        if found is not None and found.identity is not None:
            entry.name, entry.model = found.identity.vendor, found.identity.model
        entry.available = busy or bool(found and found.answered)
        if busy:
            entry.reason = "busy: a benchmark is running on it"
        elif found is not None and not found.answered:
            entry.reason = found.reason
        return entry


class AttachedDuts:
    """The DUTs this agent was started with, by id (``serial:PORT``)."""

    def __init__(self, specs: list[str], timeouts: Optional[DutTimeouts] = None) -> None:
        self.timeouts = timeouts or DutTimeouts()
        self.duts: dict[str, AttachedDut] = {}
        for spec in specs:
            port, baud = parse_port_spec(spec)
            dut = AttachedDut(port, baud, usb_vid_pid=usb_vid_pid_of(port))
            self.duts[dut.id] = dut
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(self.duts)), thread_name_prefix="serial-dut"
        )

    def describe(self) -> list[pb.AttachedDevice]:
        return [dut.describe() for dut in self.duts.values()]

    def find(self, target: str) -> Optional[AttachedDut]:
        """By id, or by bare port path."""
        return self.duts.get(target) or self.duts.get(f"serial:{target}")

    def run(
        self,
        dut: AttachedDut,
        options: pb.BenchmarkOptions,
        model: Optional[bytes],
        on_progress: Callable[[pb.Progress], None],
        cancelled: Callable[[], bool],
    ) -> pb.BenchmarkResult:
        """Blocking: waits for the port, opens it, measures, closes it (worker thread)."""
        if not dut.lock.acquire(blocking=False):
            on_progress(pb.Progress(phase="queued", total=1))
            dut.lock.acquire()
        dut.running = True
        try:
            try:
                session = DutSession.open(dut.port, dut.baud, self.timeouts)
            except SerialLinkError as exc:
                return pb.BenchmarkResult(
                    error_kind=pb.ERROR_KIND_DEVICE_PROTOCOL, error_message=str(exc)
                )
            with session:
                return benchmark_dut(session, options, model, on_progress, cancelled)
        except Exception as exc:  # noqa: BLE001 - a bug must come back as a result
            return pb.BenchmarkResult(
                error_kind=pb.ERROR_KIND_RUN_FAILED,
                error_message=f"{dut.id}: {type(exc).__name__}: {exc}",
            )
        finally:
            dut.running = False
            dut.lock.release()

    async def benchmark_events(
        self, request: pb.BenchmarkRequest, cache, context
    ) -> AsyncIterator[pb.BenchmarkEvent]:
        """The Benchmark stream for a request with a target (the servicer's branch)."""
        dut = self.find(request.target)
        if dut is None:
            known = ", ".join(self.duts) or "none (start the agent with --serial-dut PORT)"
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"target {request.target!r}: no such attached device; attached: {known}",
            )
        options = with_defaults(request.options)
        problem = validate(options)
        if problem:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        model: Optional[bytes] = None
        if request.sha256:
            entry = cache.pin(request.sha256)
            if entry is None:
                yield pb.BenchmarkEvent(
                    result=pb.BenchmarkResult(
                        sha256=request.sha256,
                        error_kind=pb.ERROR_KIND_UNKNOWN_MODEL,
                        error_message=f"model {request.sha256[:12]} is not in this agent's cache; "
                        "push it first",
                    )
                )
                return
            try:
                model = (cache.models_dir / request.sha256).read_bytes()
            finally:
                cache.unpin(request.sha256)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def progress(event: pb.Progress) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        future = loop.run_in_executor(
            self._pool, self.run, dut, options, model, progress, cancel.is_set
        )
        future.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while True:
                item = await events.get()
                if item is None:
                    result = future.result()
                    result.sha256 = request.sha256
                    yield pb.BenchmarkEvent(result=result)
                    return
                yield pb.BenchmarkEvent(progress=item)
        finally:
            cancel.set()  # the caller went away: the run stops at its next command

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def _abort(context, status: grpc.StatusCode, message: str) -> None:
    await context.abort(
        status,
        message,
        trailing_metadata=((ERROR_KIND_METADATA, pb.ErrorKind.Name(pb.ERROR_KIND_BAD_REQUEST)),),
    )


_REGISTRY = AttachedDuts([])


def configure(specs: list[str], timeouts: Optional[DutTimeouts] = None) -> AttachedDuts:
    """Sets this process's attached DUTs (the agent's `--serial-dut` flags), before serving."""
    global _REGISTRY
    _REGISTRY = AttachedDuts(specs, timeouts)
    return _REGISTRY


def registry() -> AttachedDuts:
    return _REGISTRY
