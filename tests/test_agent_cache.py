"""GetInfo and the content-addressed model cache of a real agent over real gRPC."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import grpc
import pytest

from device_agent.protocol import PROTOCOL_VERSION
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from toolkit.errors import AgentError, ModelFileError
from toolkit.transport.local import local_agent


def test_get_info_reports_identity_runtimes_and_protocol(agent):
    info = agent.info()
    assert info.protocol_version == PROTOCOL_VERSION
    assert info.cpu_cores >= 1 and info.memory_total_bytes > 0 and info.disk_free_bytes > 0
    assert {"tflite", "onnx", "torch", "tflm"} <= {r.name for r in info.runtimes}
    assert "tflite" in info.available_runtimes
    tflite = info.runtime("tflite")
    assert tflite.module in ("ai_edge_litert", "tflite_runtime") and tflite.version
    assert {s.name for s in info.sensors} == {
        "nvml",
        "rapl",
        "ina3221",
        "android-battery",
        "command",
    }
    for sensor in info.sensors:
        assert sensor.available or sensor.reason, f"{sensor.name} unavailable without a reason"


def _stub(client) -> rpc.DeviceAgentStub:
    return rpc.DeviceAgentStub(grpc.insecure_channel(client.address))


def test_push_then_second_push_sends_nothing(agent, model_files):
    sha = hashlib.sha256(model_files.onnx.read_bytes()).hexdigest()
    agent.delete_model(sha)
    assert not agent.has_model(sha)
    assert agent.push(model_files.onnx) == sha
    assert agent.has_model(sha)
    # The agent answers "already present" and stores nothing new when the sha is held.
    reply = _stub(agent).PushModel(iter([pb.ModelChunk(sha256=sha, size_bytes=1, data=b"x")]))
    assert reply.already_present
    assert sha in {m.sha256 for m in agent.list_models()}


def test_push_with_wrong_digest_is_rejected_and_nothing_is_stored(agent):
    data = b"\x00\x00\x00\x00TFL3" + os.urandom(100)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(grpc.RpcError) as caught:
        _stub(agent).PushModel(iter([pb.ModelChunk(sha256=wrong, size_bytes=len(data), data=data)]))
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "sha256 mismatch" in caught.value.details()
    assert not agent.has_model(wrong)


def test_malformed_sha_and_path_like_names_never_become_paths(agent, tmp_path):
    with pytest.raises(grpc.RpcError) as caught:
        _stub(agent).HasModel(pb.ModelRef(sha256="../../etc/passwd"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    data = b"\x00\x00\x00\x00TFL3" + os.urandom(64)
    sha = hashlib.sha256(data).hexdigest()
    target = tmp_path / "escaped"
    name = f"../../../../../../{target}"
    reply = _stub(agent).PushModel(
        iter([pb.ModelChunk(sha256=sha, name=name, size_bytes=len(data), data=data)])
    )
    assert reply.sha256 == sha
    assert not target.exists()


def test_size_limit_is_enforced(tmp_path):
    with local_agent(cache_dir=tmp_path / "cache", extra_args=("--max-model-mb", "1")) as small:
        big = tmp_path / "big.onnx"
        big.write_bytes(b"\x08" + os.urandom(2 * 2**20))
        with pytest.raises(AgentError) as caught:
            small.push(big)
        assert "at most 1048576 bytes" in str(caught.value)
        assert not small.list_models()


def test_non_model_files_are_refused_before_sending(agent, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a model file"):
        agent.push(text)
    fake = tmp_path / "fake.tflite"
    fake.write_text("not a flatbuffer")
    with pytest.raises(ModelFileError, match="does not look like a tflite model"):
        agent.push(fake)


def test_agent_refuses_to_listen_beyond_loopback_without_tls(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "device_agent",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "without TLS" in done.stderr


def test_delete_model_removes_the_file(agent, model_files, tmp_path: Path):
    sha = agent.push(model_files.tflite)
    assert agent.delete_model(sha)
    assert not agent.has_model(sha)
    assert not agent.delete_model(sha)
