"""The host's client for one device agent over gRPC.

Checks the protocol version on connect, pushes models content-addressed (nothing is sent
when the agent holds the sha already), streams benchmark progress, and maps agent failures
to our error classes with one-line messages that name the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable, Optional, Union

import grpc
import numpy as np

from device_agent.protocol import PROTOCOL_VERSION
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from device_agent.protocol.formats import FORMAT_TO_PB
from device_agent.protocol.tensors import array_to_tensor, tensor_to_array
from toolkit.devices.info import DeviceInfo
from toolkit.devices.profile import TlsConfig
from toolkit.errors import (
    AgentError,
    AgentTimeoutError,
    AgentUnreachableError,
    ModelFileError,
    ProtocolMismatchError,
    RuntimeUnavailableError,
)
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.transport.model_file import file_sha256, model_format

CHUNK_BYTES = 512 << 10  # small chunks keep the stream pipelined (measured: bench/bench_core.py)
MAX_MESSAGE_BYTES = 64 * 2**20
OnProgress = Callable[[pb.Progress], None]


class DeviceClient:
    """A connection to one agent.

    Args:
        address: "host:port".
        tls: TLS settings when the agent listens beyond loopback; None: plaintext (loopback,
            or through an SSH tunnel).
        connect_timeout_s: how long to wait for the agent when connecting.
        name: how the device is called in messages (profile name); defaults to the address.
    """

    def __init__(
        self,
        address: str,
        tls: Optional[TlsConfig] = None,
        connect_timeout_s: float = 10.0,
        name: str = "",
    ) -> None:
        self.address = address
        self.name = name or address
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        self._metadata: tuple = ()
        if tls is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(tls.ca_file).expanduser().read_bytes(),
                private_key=Path(tls.key_file).expanduser().read_bytes() if tls.key_file else None,
                certificate_chain=Path(tls.cert_file).expanduser().read_bytes()
                if tls.cert_file
                else None,
            )
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.secure_channel(address, creds, options=options)
            if tls.token_env and os.environ.get(tls.token_env):
                self._metadata = (("authorization", f"Bearer {os.environ[tls.token_env]}"),)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = rpc.DeviceAgentStub(self._channel)
        self._info: Optional[DeviceInfo] = None
        try:
            grpc.channel_ready_future(self._channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise AgentUnreachableError(
                f"device {self.name}: no agent answered at {address} "
                f"within {connect_timeout_s:g} s "
                "(is `edgeloop agent serve` running there, and the address right?)"
            ) from None
        self.info()

    # -- plumbing --------------------------------------------------------------
    def _call(self, what: str, fn, *args, timeout: Optional[float] = 60.0, **kwargs):
        try:
            return fn(*args, timeout=timeout, metadata=self._metadata, **kwargs)
        except grpc.RpcError as exc:
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: grpc.RpcError) -> AgentError:
        code, detail = exc.code(), exc.details() or ""
        prefix = f"device {self.name} ({self.address}): {what}"
        if code == grpc.StatusCode.UNAVAILABLE:
            return AgentUnreachableError(f"{prefix}: agent unreachable ({detail})")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return AgentTimeoutError(f"{prefix}: timed out ({detail})")
        if code == grpc.StatusCode.FAILED_PRECONDITION and "runtime" in detail:
            return RuntimeUnavailableError(f"{prefix}: {detail}")
        if code == grpc.StatusCode.INVALID_ARGUMENT and "unknown runtime" in detail:
            return RuntimeUnavailableError(f"{prefix}: {detail}")
        return AgentError(f"{prefix}: {detail or code.name}")

    # -- calls -----------------------------------------------------------------
    def info(self, refresh: bool = False) -> DeviceInfo:
        """GetInfo; checks the protocol version (ProtocolMismatchError on mismatch)."""
        if self._info is None or refresh:
            msg = self._call("GetInfo", self._stub.GetInfo, pb.GetInfoRequest(), timeout=120)
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
        return self._call("Health", self._stub.Health, pb.HealthRequest(), timeout=10)

    def has_model(self, sha256: str) -> bool:
        return self._call("HasModel", self._stub.HasModel, pb.ModelRef(sha256=sha256)).present

    def push(self, path: Union[str, Path], name: Optional[str] = None) -> str:
        """Sends a model file unless the agent already holds its sha256; returns the sha256."""
        path = Path(path)
        fmt = model_format(path)
        sha = file_sha256(path)
        if self.has_model(sha):
            return sha
        size = path.stat().st_size

        def chunks() -> Iterator[pb.ModelChunk]:
            with path.open("rb") as f:
                first = True
                while True:
                    data = f.read(CHUNK_BYTES)
                    if first:
                        yield pb.ModelChunk(
                            sha256=sha,
                            name=name or path.name,
                            size_bytes=size,
                            format=FORMAT_TO_PB[fmt],
                            data=data,
                        )
                        first = False
                    elif data:
                        yield pb.ModelChunk(data=data)
                    if not data:
                        return

        self._call(f"push {path.name}", self._stub.PushModel, chunks(), timeout=600)
        return sha

    def list_models(self) -> list[pb.ModelEntry]:
        return list(self._call("ListModels", self._stub.ListModels, pb.ListModelsRequest()).models)

    def delete_model(self, sha256: str) -> bool:
        return self._call("DeleteModel", self._stub.DeleteModel, pb.ModelRef(sha256=sha256)).deleted

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
        """
        options = options or BenchmarkOptions()
        sha, display = self._resolve(model)
        request = pb.BenchmarkRequest(sha256=sha, options=options.to_proto())
        timeout = (options.timeout_seconds or 300.0) * 4 + 60  # the queue may hold it a while
        result = None
        try:
            stream = self._stub.Benchmark(request, timeout=timeout, metadata=self._metadata)
            for event in stream:
                if event.HasField("progress") and on_progress is not None:
                    on_progress(event.progress)
                elif event.HasField("result"):
                    result = event.result
        except grpc.RpcError as exc:
            raise self._error("Benchmark", exc) from None
        if result is None:
            raise AgentError(f"device {self.name}: Benchmark stream ended without a result")
        return Measurement.from_proto(
            result, self.info(), model_name=name or display, requested=options
        )

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
        """
        sha, _ = self._resolve(model)
        request = pb.InferRequest(sha256=sha, runtime=runtime, threads=threads, raw=raw)
        request.inputs.extend(array_to_tensor(np.asarray(a)) for a in inputs)
        reply = self._call("Infer", self._stub.Infer, request, timeout=600)
        return [tensor_to_array(t) for t in reply.outputs]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
