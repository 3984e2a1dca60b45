"""The wire contract: generated code is fresh, and the host refuses another protocol version."""

from __future__ import annotations

import re
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from device_agent.protocol import PROTOCOL_VERSION
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from device_agent.protocol.generate import REPO_ROOT, contract_of, generate
from toolkit.errors import ProtocolMismatchError
from toolkit.transport.grpc_client import DeviceClient


def test_generated_code_matches_the_proto(tmp_path: Path):
    fresh = generate(tmp_path)
    for path in fresh:
        committed = REPO_ROOT / "device_agent" / "protocol" / path.name
        assert contract_of(committed.read_text()) == contract_of(path.read_text()), (
            f"{committed.name} is stale: run `python -m device_agent.protocol.generate`"
        )


def test_the_freshness_check_ignores_generator_versions_but_not_the_contract():
    committed = (REPO_ROOT / "device_agent" / "protocol" / "edgeloop_pb2_grpc.py").read_text()
    other_release = committed.replace("GRPC_GENERATED_VERSION = '", "GRPC_GENERATED_VERSION = '9")
    assert other_release != committed
    assert contract_of(other_release) == contract_of(committed)

    pb2 = (REPO_ROOT / "device_agent" / "protocol" / "edgeloop_pb2.py").read_text()
    renamed_field = pb2.replace("device_id", "device_ix", 1)
    assert renamed_field != pb2
    assert contract_of(renamed_field) != contract_of(pb2)
    newer_protobuf = re.sub(r"(# Protobuf Python Version:) \S+", r"\1 9.0.0", pb2)
    newer_protobuf = re.sub(r"(Domain\.PUBLIC,\s*)\d+", r"\g<1>9", newer_protobuf)
    assert newer_protobuf != pb2
    assert contract_of(newer_protobuf) == contract_of(pb2)


class _FutureAgent(rpc.DeviceAgentServicer):
    """A real gRPC server that answers GetInfo with a newer protocol version."""

    def GetInfo(self, request, context):
        return pb.DeviceInfo(
            device_id="future", protocol_version=PROTOCOL_VERSION + 1, agent_version="9.0"
        )


def test_client_refuses_an_agent_with_another_protocol_version():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc.add_DeviceAgentServicer_to_server(_FutureAgent(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(ProtocolMismatchError) as caught:
            DeviceClient(f"127.0.0.1:{port}")
        message = str(caught.value)
        assert f"v{PROTOCOL_VERSION + 1}" in message and f"v{PROTOCOL_VERSION}" in message
        assert "upgrade the host" in message
    finally:
        server.stop(0)
