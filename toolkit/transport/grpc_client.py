"""The host's client for one device agent over gRPC.

Checks the protocol version on connect, pushes models content-addressed (nothing is sent
when the agent holds the sha already), streams benchmark progress, and maps agent failures
to our error classes with one-line messages that name the device.

Never hung: the channel sends keepalive pings, so a dead link fails the call within
KEEPALIVE_S + KEEPALIVE_TIMEOUT_S seconds of silence. A Benchmark has no fixed deadline while
it waits in the agent's queue (the agent sends "queued" events, and keepalive watches the
link); once it runs, its deadline is its own timeout plus RUN_MARGIN_S. A lost link is retried
once: the host waits for the agent's address to accept connections again (not past that
deadline), opens a fresh channel and re-sends the same request. A Benchmark carries a job id
chosen here, so the agent attaches the retry to the run already under way (or finished)
instead of measuring again. An address that refuses connections means the agent is gone: the
error comes at once.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import grpc

from device_agent.measure.options import DEFAULTS as AGENT_DEFAULTS
from device_agent.protocol import PROTOCOL_VERSION
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from device_agent.protocol.chunks import OutgoingChunk, serialize_chunk
from device_agent.protocol.formats import FORMAT_TO_PB
from toolkit.devices.info import AttachedOnDevice, DeviceInfo
from toolkit.devices.profile import TlsConfig
from toolkit.errors import (
    ERROR_KIND_METADATA,
    AgentError,
    AgentLostError,
    AgentTimeoutError,
    AgentUnreachableError,
    ErrorKind,
    ModelFileError,
    ProtocolMismatchError,
    RuntimeUnavailableError,
    UnsafeModelError,
)
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.transport.credentials import AgentCredentials
from toolkit.transport.model_file import file_sha256, model_format

if TYPE_CHECKING:  # numpy is imported by infer(): a CLI profile does not pay for it
    import numpy as np

log = logging.getLogger(__name__)

PUSH_METHOD = "/edgeloop.v1.DeviceAgent/PushModel"
WRITE_BUFFER_BYTES = 8 << 20
"""HTTP/2 write buffer of the channel. gRPC's default (64 KiB) made a push write in small
pieces; 8 MiB halved the time to stream 64 MiB over loopback here (~75 -> ~45 ms)."""
CHUNK_BYTES = 1 << 20
"""Push chunk size. The agent hashes and writes one chunk while it receives the next; 1 MiB
chunks halved the client's CPU time per push against 512 KiB (64 MiB: ~100 -> ~50 ms here)."""
MAX_MESSAGE_BYTES = 64 * 2**20
KEEPALIVE_S = 5.0  # a ping after this much silence on the link ...
KEEPALIVE_TIMEOUT_S = 5.0  # ... unanswered this long: the link is dead (call fails UNAVAILABLE)
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", int(KEEPALIVE_S * 1000)),
    ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
RUN_MARGIN_S = 25.0  # a running Benchmark's deadline: its timeout plus this (result, teardown)
RECONNECT_S = 20.0  # waiting for a lost agent when no run deadline bounds the wait (queued)
MIN_RECONNECT_S = 5.0  # ... and at least this much, even close to the run deadline
PUSH_MIN_BYTES_PER_S = 100_000  # a push's deadline: 60 s plus its size at this rate
UNARY_TIMEOUT_S = 60.0
INFER_TIMEOUT_S = 600.0
# Keepalive failures, a reset connection, a killed agent all come as UNAVAILABLE. Our own
# deadlines are not retried: they are the bound on the wait.
LINK_LOST = (grpc.StatusCode.UNAVAILABLE,)
OnProgress = Callable[[pb.Progress], None]


class DeviceClient:
    """A connection to one agent.

    Args:
        address: "host:port".
        tls: TLS settings when the agent listens beyond loopback; None: plaintext (loopback,
            or through an SSH tunnel).
        connect_timeout_s: how long to wait for the agent when connecting.
        name: how the device is called in messages (profile name); defaults to the address.
        token: bearer token to send (the long-lived local agent's, from its token file);
            else the one in `tls.token_env`, if any.
        credentials: what to present, already resolved (`AgentCredentials`); given, `tls`
            and `token` are not read (a Ray actor gets the driver's credentials this way).
    """

    def __init__(
        self,
        address: str,
        tls: Optional[TlsConfig] = None,
        connect_timeout_s: float = 10.0,
        name: str = "",
        token: str = "",
        credentials: Optional[AgentCredentials] = None,
    ) -> None:
        self.address = address
        self.name = name or address
        self.credentials = credentials or AgentCredentials.resolve(
            tls, token, where=f"device {self.name}: "
        )
        self._metadata = self.credentials.metadata()
        self._open_channel()
        self._info: Optional[DeviceInfo] = None
        if not self._ready(connect_timeout_s):
            self._channel.close()
            raise AgentUnreachableError(
                f"device {self.name}: no agent answered at {address} "
                f"within {connect_timeout_s:g} s "
                "(is `edgeloop agent serve` running there, and the address right?)"
            )
        self.info()

    def _open_channel(self) -> None:
        """A fresh channel (and stub) to the agent, with keepalive; nothing is sent yet."""
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.http2.write_buffer_size", WRITE_BUFFER_BYTES),
            *KEEPALIVE_OPTIONS,
            ("grpc.max_reconnect_backoff_ms", 2000),  # back soon after a link returns
        ]
        creds = self.credentials.channel_credentials()
        if creds is not None:
            if self.credentials.server_name:
                options.append(("grpc.ssl_target_name_override", self.credentials.server_name))
            self._channel = grpc.secure_channel(self.address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(self.address, options=options)
        self._stub = rpc.DeviceAgentStub(self._channel)
        # chunks serialized by hand (`device_agent.protocol.chunks`), not by protobuf
        self._stub.PushModel = self._channel.stream_unary(
            PUSH_METHOD,
            request_serializer=serialize_chunk,
            response_deserializer=pb.PushModelReply.FromString,
        )

    def _ready(self, timeout_s: float) -> bool:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=max(timeout_s, 0.1))
            return True
        except grpc.FutureTimeoutError:
            return False

    def _reconnect(self, what: str, exc: grpc.RpcError, until: float) -> None:
        """After a lost link: waits (up to the monotonic time `until`) for the agent's address
        to accept connections, then opens a fresh channel. AgentLostError when the address
        refuses (the agent's process is gone) or stays silent past `until`."""
        prefix = f"device {self.name} ({self.address}): {what}: link lost ({exc.details()})"
        host, _, port = self.address.rpartition(":")
        host = host.strip("[]")
        start, fresh = time.monotonic(), False
        log.warning("%s; reattaching (waiting up to %.0f s)", prefix, max(until - start, 0))
        while True:
            left = until - time.monotonic()
            if left <= 0:
                raise AgentLostError(
                    f"{prefix}; the agent did not answer again within "
                    f"{time.monotonic() - start:.0f} s"
                )
            try:
                socket.create_connection((host, int(port)), timeout=min(2.0, left)).close()
            except ConnectionRefusedError:
                raise AgentLostError(f"{prefix}; the agent is gone (connection refused)") from None
            except OSError:  # timed out, no route: the link may come back
                time.sleep(min(0.5, max(until - time.monotonic(), 0)))
                continue
            if not fresh:  # opened once the address answers, so no reconnect backoff is pending
                self._channel.close()
                self._open_channel()
                fresh = True
            # Short slices: a dying agent's socket may accept one last connection; the next
            # probe then sees the refusal.
            if self._ready(min(0.5, until - time.monotonic())):
                log.warning(
                    "device %s: %s: reconnected after %.1f s",
                    self.name,
                    what,
                    time.monotonic() - start,
                )
                return

    # -- plumbing --------------------------------------------------------------
    def _call(self, what: str, method: str, request, timeout: float = UNARY_TIMEOUT_S):
        """A call with one reply, retried once after a lost link (each such call is idempotent:
        a push is keyed by its sha). `request` is a message, or for a client stream a function
        returning a fresh iterator of messages."""
        for attempt in (1, 2):
            message = request() if callable(request) else request
            try:
                return getattr(self._stub, method)(
                    message, timeout=timeout, metadata=self._metadata
                )
            except grpc.RpcError as exc:
                if exc.code() not in LINK_LOST or attempt == 2:
                    raise self._error(what, exc) from None
                self._reconnect(what, exc, until=time.monotonic() + RECONNECT_S)
        raise AssertionError("unreachable")

    def _error(self, what: str, exc: grpc.RpcError) -> AgentError:
        """Our error for a failed call. The agent names the kind of a failure it diagnosed in
        trailing metadata (`ERROR_KIND_METADATA`); the class follows that kind (`KIND_ERRORS`)
        and the error carries it as `.kind`. Never decided by the message text."""
        code, detail = exc.code(), exc.details() or ""
        prefix = f"device {self.name} ({self.address}): {what}"
        kind = _error_kind(exc)
        if kind is not None:
            return KIND_ERRORS.get(kind, AgentError)(f"{prefix}: {detail or kind.value}", kind=kind)
        if code == grpc.StatusCode.UNAVAILABLE:
            return AgentUnreachableError(f"{prefix}: agent unreachable ({detail})")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return AgentTimeoutError(f"{prefix}: timed out ({detail})")
        return AgentError(f"{prefix}: {detail or code.name}")

    # -- calls -----------------------------------------------------------------
    def info(self, refresh: bool = False) -> DeviceInfo:
        """GetInfo; checks the protocol version (ProtocolMismatchError on mismatch)."""
        if self._info is None or refresh:
            msg = self._call("GetInfo", "GetInfo", pb.GetInfoRequest(), timeout=120)
            if msg.protocol_version != PROTOCOL_VERSION:
                raise ProtocolMismatchError(
                    f"device {self.name} ({self.address}) speaks protocol v{msg.protocol_version}, "
                    f"this host speaks v{PROTOCOL_VERSION}: upgrade the "
                    f"{'agent' if msg.protocol_version < PROTOCOL_VERSION else 'host'} "
                    f"(agent {msg.agent_version})"
                )
            self._info = DeviceInfo.from_proto(msg, self.address)
        return self._info

    def health(self) -> pb.HealthReply:
        return self._call("Health", "Health", pb.HealthRequest(), timeout=10)

    def has_model(self, sha256: str) -> bool:
        return self._call("HasModel", "HasModel", pb.ModelRef(sha256=sha256)).present

    def push(self, path: Union[str, Path], name: Optional[str] = None) -> str:
        """Sends a model file unless the agent already holds its sha256; returns the sha256.

        An `.npz` of input samples (`profile --inputs`) travels the same way, its format left
        to the agent; it is read there as data only (`device_agent.measure.real_inputs`)."""
        path = Path(path)
        fmt = "" if path.suffix.lower() == ".npz" else model_format(path)
        sha = file_sha256(path)
        if self.has_model(sha):
            return sha
        size = path.stat().st_size

        def chunks() -> Iterator[OutgoingChunk]:
            buffer = memoryview(bytearray(CHUNK_BYTES))  # reused: no fresh pages per chunk
            with path.open("rb", buffering=0) as f:
                first = True
                while True:
                    data = buffer[: f.readinto(buffer)]
                    if first:
                        header = pb.ModelChunk(
                            sha256=sha, name=name or path.name, size_bytes=size,
                            format=FORMAT_TO_PB.get(fmt, pb.MODEL_FORMAT_UNSPECIFIED),
                        )
                        yield OutgoingChunk(data, header)
                        first = False
                    elif data:
                        yield OutgoingChunk(data)
                    if not data:
                        return

        # Idempotent by sha: after a lost link the whole file is sent again (once).
        timeout = 60.0 + size / PUSH_MIN_BYTES_PER_S
        self._call(f"push {path.name}", "PushModel", chunks, timeout)
        return sha

    def list_models(self) -> list[pb.ModelEntry]:
        return list(self._call("ListModels", "ListModels", pb.ListModelsRequest()).models)

    def delete_model(self, sha256: str) -> bool:
        return self._call("DeleteModel", "DeleteModel", pb.ModelRef(sha256=sha256)).deleted

    def _resolve(self, model: Union[str, Path]) -> tuple[str, str]:
        """(sha256, display name) for a path (pushed if needed) or a sha256 string."""
        text = str(model)
        if (
            len(text) == 64
            and all(c in "0123456789abcdef" for c in text)
            and not Path(text).exists()
        ):
            return text, text[:12]
        path = Path(model)
        if not path.exists():
            raise ModelFileError(f"{path}: no such file")
        return self.push(path), path.name

    def benchmark(
        self,
        model: Union[str, Path],
        options: Optional[BenchmarkOptions] = None,
        on_progress: Optional[OnProgress] = None,
        name: str = "",
    ) -> Measurement:
        """Benchmarks a model (a path, pushed first if needed, or a sha256 already held).

        A failure on the device (crash, timeout, load error) comes back as a Measurement with
        ok=False; only transport problems raise.

        Raises:
            ConfigError: unusable options, before anything is pushed.
            AgentLostError: the link broke and the agent did not come back in time (or its
                process is gone), or the link broke again after reattaching.
            AgentTimeoutError: no result by the run's timeout plus RUN_MARGIN_S after the run
                left the agent's queue.
        """
        options = options or BenchmarkOptions()
        options.validate()  # before anything is pushed
        sha, display = self._resolve(model)
        request = pb.BenchmarkRequest(
            sha256=sha, options=options.to_proto(), job_id=uuid.uuid4().hex
        )
        clock = _RunClock(run_budget_s(options))
        try:
            result = self._benchmark_stream(request, clock, on_progress)
        except _LinkLost as lost:
            # Re-send the same job id: the agent attaches it to the run already under way.
            self._reconnect("Benchmark", lost.exc, until=clock.reattach_until())
            try:
                result = self._benchmark_stream(request, clock, on_progress)
            except _LinkLost as again:
                raise AgentLostError(
                    f"device {self.name} ({self.address}): Benchmark: link lost again after "
                    f"reattaching ({again.exc.details()})"
                ) from None
        return Measurement.from_proto(
            result, self.info(), model_name=name or display, requested=options
        )

    def attached_devices(self) -> tuple[AttachedOnDevice, ...]:
        """Devices reached through this agent (DUTs on a gateway's serial ports), as its
        GetInfo lists them now."""
        return self.info(refresh=True).attached

    def benchmark_target(
        self,
        target: str,
        sha256: str,
        options: BenchmarkOptions,
        on_progress: Optional[OnProgress] = None,
    ) -> pb.BenchmarkResult:
        """One benchmark of the attached device `target` (the model already pushed), under the
        same run deadline as `benchmark`. Not reattached after a lost link: the agent keeps
        no job for a target run.

        Raises:
            AgentLostError: the link broke during the run.
            AgentTimeoutError: no result by the run's timeout plus RUN_MARGIN_S.
        """
        request = pb.BenchmarkRequest(sha256=sha256, options=options.to_proto(), target=target)
        try:
            return self._benchmark_stream(request, _RunClock(run_budget_s(options)), on_progress)
        except _LinkLost as lost:
            raise AgentLostError(
                f"device {self.name} ({self.address}): Benchmark on {target}: link lost "
                f"({lost.exc.details()})"
            ) from None

    def _benchmark_stream(
        self, request: pb.BenchmarkRequest, clock: _RunClock, on_progress: Optional[OnProgress]
    ) -> pb.BenchmarkResult:
        """One Benchmark stream, cancelled when the run's deadline passes; _LinkLost when the
        link broke (keepalive, reset)."""
        # No gRPC deadline: the queue ahead has no bound. The watch enforces the run's own.
        call = self._stub.Benchmark(request, metadata=self._metadata)
        over, done = threading.Event(), threading.Event()

        def watch() -> None:
            while not done.wait(0.2):
                if clock.expired():
                    over.set()
                    call.cancel()
                    return

        threading.Thread(target=watch, daemon=True, name="benchmark-deadline").start()
        try:
            for event in call:
                if event.HasField("progress"):
                    clock.saw(event.progress.phase)
                    if on_progress is not None:
                        on_progress(event.progress)
                elif event.HasField("result"):
                    return event.result
        except grpc.RpcError as exc:
            if over.is_set():
                raise AgentTimeoutError(
                    f"device {self.name} ({self.address}): Benchmark: no result "
                    f"{clock.budget_s:g} s after the run started (its timeout, cooldown and "
                    f"start-temperature wait, plus {RUN_MARGIN_S:g} s)"
                ) from None
            if exc.code() in LINK_LOST:
                raise _LinkLost(exc) from None
            raise self._error("Benchmark", exc) from None
        finally:
            done.set()
        raise AgentError(f"device {self.name}: Benchmark stream ended without a result")

    def infer(
        self,
        model: Union[str, Path],
        inputs: Sequence[np.ndarray],
        runtime: str = "",
        threads: int = 0,
        raw: bool = False,
    ) -> list[np.ndarray]:
        """Runs inputs (one array per model input, batch first) on the device; returns outputs.

        Float inputs are quantized by the agent for int8 models and outputs come back as
        float32, unless `raw`.

        Raises:
            AgentError: the device could not run it; `.kind` is the ErrorKind the agent named
                (UnsafeModelError for UNSAFE_MODEL, RuntimeUnavailableError for
                UNKNOWN_RUNTIME / RUNTIME_UNAVAILABLE; LOAD_FAILED, RUN_FAILED, CRASHED,
                BAD_REQUEST, UNKNOWN_MODEL as AgentError; TIMEOUT as AgentTimeoutError).
        """
        import numpy as np

        from device_agent.protocol.tensors import array_to_tensor, tensor_to_array

        sha, _ = self._resolve(model)
        request = pb.InferRequest(sha256=sha, runtime=runtime, threads=threads, raw=raw)
        request.inputs.extend(array_to_tensor(np.asarray(a)) for a in inputs)
        reply = self._call("Infer", "Infer", request, timeout=INFER_TIMEOUT_S)
        return [tensor_to_array(t) for t in reply.outputs]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


KIND_ERRORS: dict[ErrorKind, type[AgentError]] = {
    ErrorKind.UNKNOWN_RUNTIME: RuntimeUnavailableError,
    ErrorKind.RUNTIME_UNAVAILABLE: RuntimeUnavailableError,
    ErrorKind.UNSAFE_MODEL: UnsafeModelError,
    ErrorKind.TIMEOUT: AgentTimeoutError,
}
"""Error classes for the kinds that have one of their own; any other kind is an AgentError,
with `.kind` set either way."""


def _error_kind(exc: grpc.RpcError) -> Optional[ErrorKind]:
    """The ErrorKind the agent attached to a failed call, or None."""
    try:
        metadata = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - an RpcError that is not a Call (no metadata)
        return None
    for key, value in metadata:
        if key == ERROR_KIND_METADATA:
            return ErrorKind.from_name(value if isinstance(value, str) else value.decode())
    return None


class _LinkLost(Exception):
    """A stream broke on the link (not on the agent's word); carries the gRPC error."""

    def __init__(self, exc: grpc.RpcError) -> None:
        super().__init__(exc.details())
        self.exc = exc


def run_budget_s(options: BenchmarkOptions) -> float:
    """Seconds from a run's first non-queued event to its result: the agent's cooldown and
    start-temperature wait (both before the child's own timeout starts), the timeout, and
    RUN_MARGIN_S for the result and teardown."""
    timeout = options.timeout_seconds or AGENT_DEFAULTS.timeout_seconds
    wait = options.cooldown_s
    if options.max_start_temp_c:
        wait += options.start_temp_timeout_s or AGENT_DEFAULTS.start_temp_timeout_s
    return wait + timeout + RUN_MARGIN_S


class _RunClock:
    """When a Benchmark must have its result: `budget_s` after its run started.

    The run starts when the agent sends a phase other than "queued"; until then a "queued"
    event suspends the deadline (a long queue is not a dead link: keepalive watches the link).
    Before any event the request's send time counts as the start, so an agent that says
    nothing is still bounded. Monotonic seconds throughout.
    """

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._started: Optional[float] = time.monotonic()
        self._running = False
        self._lock = threading.Lock()

    def saw(self, phase: str) -> None:
        with self._lock:
            if self._running:
                return
            if phase == "queued":
                self._started = None
            else:
                self._running = True
                if self._started is None:
                    self._started = time.monotonic()

    def deadline(self) -> float:
        with self._lock:
            return math.inf if self._started is None else self._started + self.budget_s

    def expired(self) -> bool:
        return time.monotonic() > self.deadline()

    def reattach_until(self) -> float:
        """How long to wait for a lost agent: up to the run's deadline (at least
        MIN_RECONNECT_S), or RECONNECT_S when the job was still queued."""
        now, deadline = time.monotonic(), self.deadline()
        if math.isinf(deadline):
            return now + RECONNECT_S
        return max(deadline, now + MIN_RECONNECT_S)
