"""Helpers for the agent-side fault tests: real agents, raw gRPC stubs, small real models."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from toolkit.transport.local import AgentProcess


def onnx_model(elements: int = 16, seed: float = 1.0) -> bytes:
    """A real ONNX model, y = x + W with W of `elements` float32 (about 4*elements bytes);
    `seed` makes models of the same size differ."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1, elements), seed, dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, elements])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, elements])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def fake_tflite(size: int, seed: int = 0) -> bytes:
    """Bytes the cache accepts as a .tflite (it checks the magic, not the content)."""
    head = b"\x00\x00\x00\x00TFL3"
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (head + body)[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_stream(data: bytes, name: str = "m", chunk: int = 256 * 1024, **first):
    """ModelChunks for `data`; `first` overrides fields of the first chunk."""
    fields = {"sha256": sha(data), "name": name, "size_bytes": len(data), **first}
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    yield pb.ModelChunk(data=pieces[0], **fields)
    for piece in pieces[1:]:
        yield pb.ModelChunk(data=piece)


def push(stub: rpc.DeviceAgentStub, data: bytes, name: str = "m", **first) -> pb.PushModelReply:
    return stub.PushModel(chunk_stream(data, name, **first), timeout=30)


class StalledPush:
    """A push that sends its first chunk and then sends nothing until released."""

    def __init__(self, stub: rpc.DeviceAgentStub, data: bytes) -> None:
        self.release = threading.Event()
        self.sent_first = threading.Event()

        def chunks():
            yield pb.ModelChunk(
                sha256=sha(data), name="stalled", size_bytes=len(data), data=data[:1024]
            )
            self.sent_first.set()
            self.release.wait(120)

        self.future = stub.PushModel.future(chunks(), timeout=120)

    def error(self, timeout: float) -> grpc.RpcError:
        """The RpcError the push ended with (waits up to `timeout` seconds)."""
        exc = self.future.exception(timeout=timeout)
        assert exc is not None, "the stalled push was accepted"
        return exc


class EventReader:
    """Reads a Benchmark stream in a thread; `events` receives (arrival time, event)."""

    def __init__(self, stub: rpc.DeviceAgentStub, request: pb.BenchmarkRequest) -> None:
        self.sent = time.monotonic()
        self.call = stub.Benchmark(request, timeout=300)
        self.events: queue.Queue = queue.Queue()
        self.error: Optional[grpc.RpcError] = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.put((time.monotonic(), event))
        except grpc.RpcError as exc:
            self.error = exc
        self.events.put((time.monotonic(), None))

    def next(self, timeout: float = 60) -> tuple[float, Optional[pb.BenchmarkEvent]]:
        return self.events.get(timeout=timeout)

    def until_running(self, timeout: float = 60) -> pb.Progress:
        """Waits for the first progress event past "queued" (the child is measuring)."""
        deadline = time.monotonic() + timeout
        while True:
            _, event = self.next(max(0.1, deadline - time.monotonic()))
            assert event is not None, f"stream ended early: {self.error}"
            assert event.WhichOneof("event") == "progress", event
            if event.progress.phase != "queued":
                return event.progress

    def result(self, timeout: float = 120) -> pb.BenchmarkResult:
        deadline = time.monotonic() + timeout
        while True:
            _, event = self.next(max(0.1, deadline - time.monotonic()))
            assert event is not None, f"stream ended without a result: {self.error}"
            if event.WhichOneof("event") == "result":
                return event.result


def options(seconds: float = 0.2, **more) -> pb.BenchmarkOptions:
    """Quick benchmark options (no power sensor) whose timed window lasts `seconds`."""
    return pb.BenchmarkOptions(
        warmup_runs=1,
        warmup_min_seconds=0.01,
        min_runs=3,
        min_seconds=seconds,
        idle_seconds=0.01,
        power_sensor="none",
        timeout_seconds=120,
        **more,
    )


def insecure_stub(agent: AgentProcess) -> tuple[grpc.Channel, rpc.DeviceAgentStub]:
    channel = grpc.insecure_channel(agent.address)
    return channel, rpc.DeviceAgentStub(channel)


def kill_agent(agent: AgentProcess) -> None:
    """SIGKILL the agent and everything it started (its own session)."""
    try:
        os.killpg(agent.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    agent.proc.wait(timeout=10)
    for stream in (agent.proc.stdout, agent.proc.stderr):
        if stream:
            stream.close()


def wait_for(condition, timeout: float, what: str) -> None:
    """Polls `condition` (a state on disk or in the agent) until true; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(frozen=True)
class Pki:
    """A test CA, a server certificate for localhost/127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    outsider_cert: Path  # self-signed, not from the CA
    outsider_key: Path


def make_pki(folder: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert, key) -> tuple[Path, Path]:
        c, k = folder / f"{stem}.pem", folder / f"{stem}.key"
        c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return c, k

    def build(cn, key, issuer_name, issuer_key, ca: bool, san: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return b.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("edgeloop-test-ca", ca_key, name("edgeloop-test-ca"), ca_key, True, False)
    ca_path, _ = write("ca", ca_cert, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    s_cert, s_key = write(
        "server", build("agent", server_key, ca_cert.subject, ca_key, False, True), server_key
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    c_cert, c_key = write(
        "client", build("host", client_key, ca_cert.subject, ca_key, False, False), client_key
    )
    out_key = ec.generate_private_key(ec.SECP256R1())
    o_cert, o_key = write(
        "outsider", build("outsider", out_key, name("outsider"), out_key, False, False), out_key
    )
    return Pki(ca_path, s_cert, s_key, c_cert, c_key, o_cert, o_key)
