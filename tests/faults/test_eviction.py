"""Nothing in use is evicted: models queued or running in a Benchmark are pinned, quota
pressure refuses the push instead, and a killed push leaves nothing behind."""

from __future__ import annotations

import grpc
import pytest

from device_agent.protocol import edgeloop_pb2 as pb
from tests.faults.agent_helpers import (
    EventReader,
    StalledPush,
    fake_tflite,
    insecure_stub,
    kill_agent,
    onnx_model,
    options,
    push,
    sha,
    wait_for,
)
from toolkit.transport.local import AgentProcess

KB = 1024


def test_quota_pressure_never_evicts_the_running_or_queued_model(tmp_path):
    """Guards the pins: with a 1 MB quota, a model being benchmarked and one queued behind
    it (400 KB each) survive pushes that need room; an unpinned model is evicted instead,
    and a push that could only fit by evicting a pinned model is refused RESOURCE_EXHAUSTED
    naming used / quota / pinned bytes. Both benchmarks then measure normally."""
    agent = AgentProcess(tmp_path / "cache", ("--quota-mb", "1"))
    channel, stub = insecure_stub(agent)
    try:
        old = fake_tflite(200 * KB, seed=1)
        push(stub, old, "old")
        running, queued = onnx_model(100_000, 1.0), onnx_model(100_000, 2.0)
        push(stub, running, "running")
        push(stub, queued, "queued")
        first = EventReader(stub, pb.BenchmarkRequest(sha256=sha(running), options=options(3.0)))
        first.until_running()
        second = EventReader(stub, pb.BenchmarkRequest(sha256=sha(queued), options=options()))
        _, event = second.next(5)
        assert event.progress.phase == "queued" and event.progress.total == 1

        filler = fake_tflite(150 * KB, seed=2)
        push(stub, filler, "filler")  # fits by evicting the unpinned, least recently used model
        held = {m.sha256 for m in stub.ListModels(pb.ListModelsRequest(), timeout=5).models}
        assert held == {sha(running), sha(queued), sha(filler)}

        with pytest.raises(grpc.RpcError) as caught:
            push(stub, fake_tflite(300 * KB, seed=3), "too-much")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        detail = caught.value.details()
        assert "quota 1048576 bytes" in detail and "used" in detail
        assert f"{len(running) + len(queued)} bytes pinned" in detail
        with pytest.raises(grpc.RpcError) as caught:  # deleting a model in use is refused too
            stub.DeleteModel(pb.ModelRef(sha256=sha(queued)), timeout=5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        for reader in (first, second):
            result = reader.result()
            assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
            assert result.latency.n >= 3
        # Once the benchmarks ended, the pins are gone: the same push now fits.
        push(stub, fake_tflite(300 * KB, seed=3), "now-fits")
    finally:
        channel.close()
        agent.stop()


def test_orphaned_temporary_files_are_removed_at_start(tmp_path):
    """Guards the start-up sweep: `tmp/push-*` files left by a killed agent (and model files
    the index does not know) are removed, so they neither fill the disk nor the quota."""
    cache = tmp_path / "cache"
    (cache / "tmp").mkdir(parents=True)
    (cache / "models").mkdir()
    orphan = cache / "tmp" / "push-abc123"
    orphan.write_bytes(b"x" * 4096)
    stray = cache / "models" / ("a" * 64)
    stray.write_bytes(b"y" * 4096)
    agent = AgentProcess(cache)
    try:
        assert not orphan.exists() and not stray.exists()
    finally:
        agent.stop()


def test_sigkill_mid_push_then_restart_leaves_no_partial_entry_and_re_push_works(tmp_path):
    """Guards atomic pushes and the sweep: an agent SIGKILLed while a push is half written
    restarts with no entry for that model and no temporary file, and the push then works."""
    cache = tmp_path / "cache"
    agent = AgentProcess(cache)
    data = onnx_model(50_000, 3.0)
    channel, stub = insecure_stub(agent)
    stalled = StalledPush(stub, data)
    wait_for(lambda: any((cache / "tmp").glob("push-*")), 30, "the push's temporary file")
    kill_agent(agent)
    stalled.release.set()
    channel.close()
    assert list((cache / "tmp").glob("push-*"))  # what the kill left behind

    agent = AgentProcess(cache)
    channel, stub = insecure_stub(agent)
    try:
        assert not list((cache / "tmp").glob("push-*"))
        assert not stub.HasModel(pb.ModelRef(sha256=sha(data)), timeout=5).present
        assert not stub.ListModels(pb.ListModelsRequest(), timeout=5).models
        reply = push(stub, data, "again")
        assert reply.sha256 == sha(data) and not reply.already_present
        assert stub.HasModel(pb.ModelRef(sha256=sha(data)), timeout=5).present
    finally:
        channel.close()
        agent.stop()
