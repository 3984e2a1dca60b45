"""Job ids: a request whose job_id the agent knows attaches to that job, so a client that
lost its link (or retried) gets the result of the run it started and nothing is measured
twice."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from device_agent.protocol import edgeloop_pb2 as pb
from tests.faults.agent_helpers import EventReader, insecure_stub, onnx_model, options, push, sha
from toolkit.transport.local import AgentProcess


@pytest.fixture(scope="module")
def agent_stub(tmp_path_factory):
    agent = AgentProcess(tmp_path_factory.mktemp("reattach-cache"))
    channel, stub = insecure_stub(agent)
    yield stub
    channel.close()
    agent.stop()


def test_the_same_job_id_twice_is_measured_once(agent_stub):
    """Guards the job table: a second request with a finished job's id returns that job's
    result at once (same start time, same samples) instead of measuring again."""
    model = onnx_model(64, 1.0)
    push(agent_stub, model)
    request = pb.BenchmarkRequest(sha256=sha(model), options=options(1.0, keep_samples=50),
                                  job_id=str(uuid.uuid4()))
    first = EventReader(agent_stub, request).result()
    assert first.error_kind == pb.ERROR_KIND_NONE, first.error_message
    started = time.monotonic()
    again = EventReader(agent_stub, request).result()
    assert time.monotonic() - started < 0.9  # no new measurement (its window alone is 1 s)
    assert again == first
    # A different request under the same id is refused, not confused with the first.
    other = pb.BenchmarkRequest(sha256=sha(model), options=options(2.0), job_id=request.job_id)
    with pytest.raises(grpc.RpcError) as caught:
        list(agent_stub.Benchmark(other, timeout=10))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_a_client_attaching_mid_run_gets_the_result_of_the_run_in_progress(agent_stub):
    """Guards reattach after a lost link: the first client goes away mid-run; its job (it
    has a job id) keeps running instead of being killed, and a second client attaching with
    the same id gets the current progress and then the one result."""
    model = onnx_model(64, 2.0)
    push(agent_stub, model)
    request = pb.BenchmarkRequest(sha256=sha(model), options=options(3.0),
                                  job_id=f"job-{uuid.uuid4()}")
    first = EventReader(agent_stub, request)
    first.until_running()
    first.call.cancel()  # the link is gone
    attach = EventReader(agent_stub, pb.BenchmarkRequest(job_id=request.job_id))
    _, event = attach.next(5)
    assert event.WhichOneof("event") == "progress" and event.progress.phase != "queued"
    result = attach.result()
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert result.sha256 == sha(model) and result.timed_window_s >= 3.0
    # A third request with the full request and the same id gets the same result.
    assert EventReader(agent_stub, request).result() == result


def test_an_unknown_job_id_attaches_to_nothing_and_a_full_request_runs(agent_stub):
    """After an agent restart the id is unknown: attach-only gets ERROR_KIND_NOT_FOUND as
    data, while a request carrying its sha256 runs as a new job; malformed ids are refused."""
    result = EventReader(agent_stub, pb.BenchmarkRequest(job_id="never-seen")).result()
    assert result.error_kind == pb.ERROR_KIND_NOT_FOUND and "never-seen" in result.error_message
    model = onnx_model(64, 3.0)
    push(agent_stub, model)
    fresh = pb.BenchmarkRequest(sha256=sha(model), options=options(), job_id="never-seen-2")
    assert EventReader(agent_stub, fresh).result().error_kind == pb.ERROR_KIND_NONE
    with pytest.raises(grpc.RpcError) as caught:
        list(agent_stub.Benchmark(pb.BenchmarkRequest(sha256=sha(model), job_id="../x y"),
                                  timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
