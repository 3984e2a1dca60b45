"""The gRPC servicer: GetInfo, Health, model cache calls, Benchmark and Infer."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc

from device_agent import system_info
from device_agent.cache.model_cache import (
    BadDigestError,
    CacheError,
    ModelCache,
    TooLargeError,
    check_sha,
)
from device_agent.measure.runner import benchmark_in_child
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from device_agent.protocol.formats import FORMAT_TO_PB, PB_TO_FORMAT
from device_agent.protocol.tensors import array_to_tensor, tensor_to_array
from device_agent.server.infer_pool import InferFailure, InferPool
from device_agent.server.info import build_device_info
from device_agent.server.queue import BenchmarkQueue

INFER_STATUS = {
    "unknown_runtime": grpc.StatusCode.INVALID_ARGUMENT,
    "bad_input": grpc.StatusCode.INVALID_ARGUMENT,
    "unavailable": grpc.StatusCode.FAILED_PRECONDITION,
    "load": grpc.StatusCode.FAILED_PRECONDITION,
    "unsafe": grpc.StatusCode.FAILED_PRECONDITION,  # the model could run code: refused
    "run": grpc.StatusCode.INTERNAL,
    "crash": grpc.StatusCode.INTERNAL,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
}


class DeviceAgentService(rpc.DeviceAgentServicer):
    """Serves one device. Benchmarks queue one at a time; Infer runs in its own worker."""

    def __init__(self, cache: ModelCache, device_id: str = "") -> None:
        self.cache = cache
        self.device_id = device_id or system_info.default_device_id()
        self.started = time.monotonic()
        self.bench_queue = BenchmarkQueue()
        self.infer_pool = InferPool()

    # -- identity ------------------------------------------------------------
    def GetInfo(self, request, context) -> pb.DeviceInfo:
        return build_device_info(self.cache, self.device_id)

    def Health(self, request, context) -> pb.HealthReply:
        return pb.HealthReply(
            ok=True,
            uptime_s=time.monotonic() - self.started,
            queued_benchmarks=self.bench_queue.waiting,
        )

    # -- model cache -----------------------------------------------------------
    def _sha_or_abort(self, sha256: str, context) -> str:
        try:
            return check_sha(sha256)
        except BadDigestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def HasModel(self, request, context) -> pb.HasModelReply:
        sha = self._sha_or_abort(request.sha256, context)
        return pb.HasModelReply(present=self.cache.path_of(sha) is not None)

    def PushModel(self, request_iterator, context) -> pb.PushModelReply:
        first = next(request_iterator, None)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty push: no chunks received")
        sha = self._sha_or_abort(first.sha256, context)
        held = self.cache.get(sha)
        if held is not None and self.cache.path_of(sha) is not None:
            for _ in request_iterator:
                pass
            return pb.PushModelReply(sha256=sha, size_bytes=held.size_bytes, already_present=True)

        def chunks() -> Iterator[bytes]:
            yield first.data
            for chunk in request_iterator:
                yield chunk.data

        try:
            entry = self.cache.store(
                sha, first.name, first.size_bytes, PB_TO_FORMAT.get(first.format, ""), chunks()
            )
        except TooLargeError as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except BadDigestError as exc:
            context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
        except CacheError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.PushModelReply(sha256=sha, size_bytes=entry.size_bytes, already_present=False)

    def ListModels(self, request, context) -> pb.ListModelsReply:
        reply = pb.ListModelsReply()
        for m in self.cache.list():
            reply.models.add(
                sha256=m.sha256,
                name=m.name,
                size_bytes=m.size_bytes,
                format=FORMAT_TO_PB.get(m.format, 0),
                stored_unix=m.stored_unix,
            )
        return reply

    def DeleteModel(self, request, context) -> pb.DeleteModelReply:
        sha = self._sha_or_abort(request.sha256, context)
        return pb.DeleteModelReply(deleted=self.cache.delete(sha))

    # -- measurement -----------------------------------------------------------
    def Benchmark(self, request, context) -> Iterator[pb.BenchmarkEvent]:
        sha = self._sha_or_abort(request.sha256, context)
        path = self.cache.path_of(sha)
        if path is None:
            yield pb.BenchmarkEvent(
                result=pb.BenchmarkResult(
                    sha256=sha,
                    error_kind=pb.ERROR_KIND_UNKNOWN_MODEL,
                    error_message=f"model {sha[:12]} is not in this agent's cache; push it first",
                )
            )
            return
        self.cache.touch(sha)
        entry = self.cache.get(sha)
        events: queue.Queue = queue.Queue()
        cancelled = lambda: not context.is_active()  # noqa: E731

        def work() -> None:
            with self.bench_queue.turn(
                on_wait=lambda ahead: events.put(pb.Progress(phase="queued", done=0, total=ahead)),
                cancelled=cancelled,
            ) as got_turn:
                if not got_turn:
                    events.put(None)
                    return
                result = benchmark_in_child(
                    str(path),
                    entry.format,
                    request.options,
                    on_progress=events.put,
                    cancelled=cancelled,
                )
            result.sha256 = sha
            events.put(result)

        threading.Thread(target=work, daemon=True).start()
        while True:
            item = events.get()
            if item is None:
                return
            if isinstance(item, pb.BenchmarkResult):
                yield pb.BenchmarkEvent(result=item)
                return
            yield pb.BenchmarkEvent(progress=item)

    def Infer(self, request, context) -> pb.InferReply:
        sha = self._sha_or_abort(request.sha256, context)
        path = self.cache.path_of(sha)
        if path is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"model {sha[:12]} is not in this agent's cache"
            )
        if not request.inputs:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Infer needs at least one input tensor")
        try:
            arrays = [tensor_to_array(t) for t in request.inputs]
        except (TypeError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad input tensor: {exc}")
        self.cache.touch(sha)
        fmt = self.cache.get(sha).format
        try:
            outputs, compute_ms = self.infer_pool.infer(
                str(path), fmt, request.runtime, request.threads, arrays, request.raw
            )
        except InferFailure as failure:
            context.abort(INFER_STATUS.get(failure.kind, grpc.StatusCode.INTERNAL), failure.message)
        reply = pb.InferReply(compute_ms=compute_ms)
        reply.outputs.extend(array_to_tensor(o, f"output_{i}") for i, o in enumerate(outputs))
        return reply

    def close(self) -> None:
        from device_agent.measure.runner import close_spare_worker

        self.infer_pool.close()
        close_spare_worker()
