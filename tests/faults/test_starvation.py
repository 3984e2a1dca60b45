"""Never starved: control calls answer while pushes stall and benchmarks queue; pushes are
bounded and an idle push is cancelled; every queued benchmark hears where it stands at once."""

from __future__ import annotations

import time

import grpc

from device_agent.protocol import edgeloop_pb2 as pb
from tests.faults.agent_helpers import (
    EventReader,
    StalledPush,
    fake_tflite,
    insecure_stub,
    onnx_model,
    options,
    push,
    rss_mb,
    sha,
    wait_for,
)
from toolkit.transport.local import AgentProcess

STALLED = 8
QUEUED = 50


def _timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_control_calls_answer_within_1s_while_8_pushes_stall_and_50_benchmarks_queue(tmp_path):
    """Guards the event-loop server: 8 pushes that send one chunk and stall, and 50 queued
    Benchmarks, hold no thread a control call needs: Health, GetInfo, HasModel and ListModels
    each answer within 1 s; the 9th push is refused RESOURCE_EXHAUSTED; each of the 49
    benchmarks waiting behind the running one gets "queued, N ahead" within 1 s, with N
    1..49; the agent stays under 200 MB RSS."""
    cache = tmp_path / "cache"
    agent = AgentProcess(cache, ("--max-pushes", str(STALLED), "--push-idle-s", "120"))
    channel, stub = insecure_stub(agent)
    stalled: list[StalledPush] = []
    readers: list[EventReader] = []
    try:
        model = onnx_model(16, 1.0)
        push(stub, model, "m")
        stub.GetInfo(pb.GetInfoRequest(), timeout=60)  # first call pays the runtime probe
        rss_before = rss_mb(agent.pid)

        stalled = [StalledPush(stub, fake_tflite(64 * 1024, seed=i)) for i in range(STALLED)]
        wait_for(lambda: len(list((cache / "tmp").glob("push-*"))) == STALLED, 30,
                 "8 stalled pushes holding their temporary files")
        try:
            push(stub, fake_tflite(4096, seed=99), "ninth")
            raise AssertionError("the 9th push was accepted")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"{STALLED} pushes in progress" in exc.details()

        request = pb.BenchmarkRequest(sha256=sha(model), options=options(120.0))
        readers.append(EventReader(stub, request))
        readers[0].until_running()
        readers += [EventReader(stub, request) for _ in range(QUEUED - 1)]
        ahead = set()
        for reader in readers[1:]:
            arrived, event = reader.next(5)
            assert event is not None and event.progress.phase == "queued", event
            assert arrived - reader.sent < 1.0
            ahead.add(event.progress.total)
        wait_for(lambda: stub.Health(pb.HealthRequest(), timeout=1).queued_benchmarks == QUEUED,
                 10, "all 50 benchmarks queued")
        assert ahead == set(range(1, QUEUED))

        calls = {
            "Health": lambda: stub.Health(pb.HealthRequest(), timeout=1),
            "GetInfo": lambda: stub.GetInfo(pb.GetInfoRequest(), timeout=1),
            "HasModel": lambda: stub.HasModel(pb.ModelRef(sha256=sha(model)), timeout=1),
            "ListModels": lambda: stub.ListModels(pb.ListModelsRequest(), timeout=1),
        }
        worst = {name: max(_timed(call) for _ in range(10)) for name, call in calls.items()}
        rss = rss_mb(agent.pid)
        print(f"worst latency under {STALLED} stalled pushes + {QUEUED} benchmarks: "
              + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in worst.items())
              + f"; agent RSS {rss_before:.0f} -> {rss:.0f} MB")
        assert all(v < 1.0 for v in worst.values()), worst
        assert rss < 200, rss

        # The running client goes away (no job id): its child is killed, and every waiting
        # job hears at once that it moved up by one.
        readers[0].call.cancel()
        first_ahead: dict[int, int | None] = {id(r): None for r in readers[1:]}
        for reader in readers[1:]:
            arrived, event = reader.next(5)
            assert event is not None and event.WhichOneof("event") == "progress", event
            if event.progress.phase == "queued":
                first_ahead[id(reader)] = event.progress.total
        moved_up = sorted(v for v in first_ahead.values() if v is not None)
        assert moved_up == list(range(1, QUEUED - 1))
        for reader in readers[1:]:
            reader.call.cancel()
        wait_for(lambda: stub.Health(pb.HealthRequest(), timeout=1).queued_benchmarks == 0,
                 15, "cancelled benchmarks (no job id) to leave the queue")
    finally:
        for push_call in stalled:
            push_call.release.set()
            push_call.future.cancel()
        for reader in readers:
            reader.call.cancel()
        channel.close()
        agent.stop()


def test_a_push_idle_between_chunks_is_cancelled_and_its_temporary_file_removed(tmp_path):
    """Guards the idle timeout: a push that sends one chunk and then nothing is cancelled
    after --push-idle-s (here 1 s) with DEADLINE_EXCEEDED, its temporary file is removed and
    its slot freed, so stalled clients cannot hold the push bound forever."""
    cache = tmp_path / "cache"
    agent = AgentProcess(cache, ("--max-pushes", "1", "--push-idle-s", "1"))
    channel, stub = insecure_stub(agent)
    try:
        stalled = StalledPush(stub, fake_tflite(64 * 1024))
        started = time.monotonic()
        error = stalled.error(timeout=30)
        waited = time.monotonic() - started
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "idle for more than 1 s" in error.details()
        assert 0.9 < waited < 10
        stalled.release.set()
        assert not list((cache / "tmp").glob("push-*"))
        assert push(stub, fake_tflite(4096, seed=5), "after").sha256  # the slot is free again
    finally:
        channel.close()
        agent.stop()
