"""The gRPC servicer (grpc.aio): GetInfo, Health, model cache calls, Benchmark and Infer.

Everything runs on one event loop, and nothing on it blocks: control calls (GetInfo in a
small pool of its own; Health, HasModel, ListModels inline) answer while pushes stall and
benchmarks queue; pushes are bounded and cancelled when idle; benchmarks run one at a time
in one worker thread; Infer runs in a pool of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import grpc

from device_agent import system_info
from device_agent.cache.model_cache import (
    BadDigestError,
    CacheError,
    InUseError,
    ModelCache,
    PushWriter,
    TooLargeError,
    check_sha,
)
from device_agent.measure.options import validate, with_defaults
from device_agent.measure.runner import benchmark_in_child
from device_agent.protocol import ERROR_KIND_METADATA
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from device_agent.protocol.chunks import ChunkParseError
from device_agent.protocol.formats import FORMAT_TO_PB, PB_TO_FORMAT
from device_agent.protocol.tensors import array_to_tensor, tensor_to_array
from device_agent.server.infer_pool import KEEP_LOADED, InferFailure, InferPool
from device_agent.server.info import build_device_info
from device_agent.server.jobs import Job, JobIdError, JobTable, check_job_id
from device_agent.server.queue import BenchmarkQueue
from device_agent.server.write_lane import WriteLane

INFER_FAILURES: dict[str, tuple[grpc.StatusCode, int]] = {  # InferFailure.kind -> status, kind
    "unknown_runtime": (grpc.StatusCode.INVALID_ARGUMENT, pb.ERROR_KIND_UNKNOWN_RUNTIME),
    "bad_input": (grpc.StatusCode.INVALID_ARGUMENT, pb.ERROR_KIND_BAD_REQUEST),
    "unavailable": (grpc.StatusCode.FAILED_PRECONDITION, pb.ERROR_KIND_RUNTIME_UNAVAILABLE),
    "load": (grpc.StatusCode.FAILED_PRECONDITION, pb.ERROR_KIND_LOAD_FAILED),
    # the model could run code: refused
    "unsafe": (grpc.StatusCode.FAILED_PRECONDITION, pb.ERROR_KIND_UNSAFE_MODEL),
    "run": (grpc.StatusCode.INTERNAL, pb.ERROR_KIND_RUN_FAILED),
    "crash": (grpc.StatusCode.INTERNAL, pb.ERROR_KIND_CRASHED),
    "timeout": (grpc.StatusCode.DEADLINE_EXCEEDED, pb.ERROR_KIND_TIMEOUT),
}
INFER_WORKER_KEEPS = ("bad_input", "run")  # failures after which the worker holds the model
MAX_PUSHES = 4
PUSH_IDLE_S = 20.0


class PushIdleError(Exception):
    """A push sent no chunk for push_idle_s."""


PUSH_FAILURES: dict[type, grpc.StatusCode] = {  # a subclass maps as its nearest listed base
    PushIdleError: grpc.StatusCode.DEADLINE_EXCEEDED,
    TooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BadDigestError: grpc.StatusCode.DATA_LOSS,
    CacheError: grpc.StatusCode.INVALID_ARGUMENT,
    ChunkParseError: grpc.StatusCode.INVALID_ARGUMENT,
}


async def _abort(context, status: grpc.StatusCode, kind: int, message: str) -> None:
    """Ends the call with `status` and names its ErrorKind in trailing metadata."""
    await context.abort(
        status, message, trailing_metadata=((ERROR_KIND_METADATA, pb.ErrorKind.Name(kind)),)
    )


class DeviceAgentService(rpc.DeviceAgentServicer):
    """Serves one device.

    Args:
        cache: the model store.
        device_id: reported by GetInfo (default: hostname + machine id).
        max_pushes: pushes in progress at once; more are refused RESOURCE_EXHAUSTED.
        push_idle_s: a push that sends no chunk for this long is cancelled (seconds).
    """

    def __init__(
        self,
        cache: ModelCache,
        device_id: str = "",
        max_pushes: int = MAX_PUSHES,
        push_idle_s: float = PUSH_IDLE_S,
    ) -> None:
        self.cache = cache
        self.device_id = device_id or system_info.default_device_id()
        self.started = time.monotonic()
        self.max_pushes = max_pushes
        self.push_idle_s = push_idle_s
        self.jobs = JobTable()
        self.bench_queue = BenchmarkQueue(run=self._measure, on_end=self._job_ended)
        self.infer_pool = InferPool()
        self._pushes = 0
        self._control = ThreadPoolExecutor(max_workers=2, thread_name_prefix="control")
        self._infer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="infer")
        # Mirrors the Infer worker's LRU of loaded (sha, runtime, threads): each entry pins its
        # model, so a model the worker holds loaded is not evicted under it.
        self._infer_loaded: OrderedDict[tuple[str, str, int], None] = OrderedDict()

    # -- identity ------------------------------------------------------------
    async def GetInfo(self, request, context) -> pb.DeviceInfo:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._control, build_device_info, self.cache, self.device_id
        )

    async def Health(self, request, context) -> pb.HealthReply:
        return pb.HealthReply(
            ok=True,
            uptime_s=time.monotonic() - self.started,
            queued_benchmarks=self.bench_queue.waiting,
        )

    # -- model cache -----------------------------------------------------------
    async def _sha_or_abort(self, sha256: str, context) -> str:
        try:
            return check_sha(sha256)
        except BadDigestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def HasModel(self, request, context) -> pb.HasModelReply:
        sha = await self._sha_or_abort(request.sha256, context)
        return pb.HasModelReply(present=self.cache.path_of(sha) is not None)

    async def _next_chunk(self, chunks) -> Optional[pb.ModelChunk]:
        """The next chunk, None at the end; PushIdleError after push_idle_s without one."""
        try:
            return await asyncio.wait_for(chunks.__anext__(), self.push_idle_s)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise PushIdleError(
                f"push idle for more than {self.push_idle_s:g} s between chunks; cancelled"
            ) from None

    async def PushModel(self, request_iterator, context) -> pb.PushModelReply:
        if self._pushes >= self.max_pushes:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._pushes} pushes in progress (at most {self.max_pushes}); try again",
            )
        self._pushes += 1
        try:
            return await self._receive_push(request_iterator.__aiter__(), context)
        except tuple(PUSH_FAILURES) as exc:
            status = next(PUSH_FAILURES[k] for k in type(exc).__mro__ if k in PUSH_FAILURES)
            message = str(exc)
        finally:
            self._pushes -= 1
        # the temporary file is gone and the slot free before the client hears the status
        await context.abort(status, message)

    async def _receive_push(self, chunks, context) -> pb.PushModelReply:
        """Writes the streamed chunks into the cache; the temporary file is removed on any
        failure before the exception leaves."""
        first = await self._next_chunk(chunks)
        if first is None:
            raise CacheError("empty push: no chunks received")
        sha = await self._sha_or_abort(first.sha256, context)
        held = self.cache.get(sha)
        if held is not None and self.cache.path_of(sha) is not None:
            return pb.PushModelReply(sha256=sha, size_bytes=held.size_bytes, already_present=True)
        writer: PushWriter = self.cache.begin_push(
            sha, first.name, first.size_bytes, PB_TO_FORMAT.get(first.format, "")
        )
        lane = WriteLane(writer)
        try:
            chunk = first
            while chunk is not None:
                if chunk.data:
                    await lane.write(chunk.data)
                chunk = await self._next_chunk(chunks)
            entry = await lane.commit()
        finally:
            await lane.close()
            writer.abort()
        return pb.PushModelReply(sha256=sha, size_bytes=entry.size_bytes, already_present=False)

    async def ListModels(self, request, context) -> pb.ListModelsReply:
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

    async def DeleteModel(self, request, context) -> pb.DeleteModelReply:
        sha = await self._sha_or_abort(request.sha256, context)
        for key in [k for k in self._infer_loaded if k[0] == sha]:  # an explicit delete wins
            del self._infer_loaded[key]
            self.cache.unpin(sha)
        try:
            return pb.DeleteModelReply(deleted=self.cache.delete(sha))
        except InUseError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    # -- measurement -----------------------------------------------------------
    async def Benchmark(self, request, context):
        """Queues a benchmark (or attaches to a known job) and streams its events.

        Contract (agent side):
          * Events: zero or more `progress`, then exactly one `result`, then the stream ends.
            A queued job gets Progress(phase="queued", total=N jobs ahead) at once when N > 0,
            and again whenever N changes; the running phases follow ("loading", "warmup",
            "idle", "timed", "arena").
          * Bad options (`validate(with_defaults(options))`) or a malformed job_id: the call
            ends INVALID_ARGUMENT naming the field, before anything is queued. A model not in
            the cache: a result with ERROR_KIND_UNKNOWN_MODEL.
          * job_id (client-chosen, 1-128 of [A-Za-z0-9._:-], e.g. a UUID): a request whose
            job_id the agent knows (queued, running, or finished within the last 10 minutes,
            at most the last 256 finished) attaches to that job instead of starting another:
            it first gets the job's current state (queued N ahead / the last progress / the
            result at once) and then the same events and the same result as every other
            stream attached to it. The model is measured once. The sha256 and options must be
            those of the known job, else ALREADY_EXISTS. A request with a job_id and an empty
            sha256 only attaches: unknown id -> a result with ERROR_KIND_NOT_FOUND (e.g. the
            agent restarted). An unknown job_id with a sha256 starts a new job.
          * Client gone (cancelled, deadline, or the link found dead by keepalive, within
            ~10 s): a job WITH a job_id keeps its place and runs to the end, and its result
            is kept for reattach; a job WITHOUT a job_id is withdrawn from the queue or its
            child killed, as soon as its stream ends.
          * The model is pinned from acceptance until the job ends: quota pressure never
            evicts it (the push that would need it is refused RESOURCE_EXHAUSTED).
        """
        if request.target:  # a DUT on this gateway's serial port: its own worker, not the queue
            from device_agent.serial_dut.attached import registry

            async for event in registry().benchmark_events(request, self.cache, context):
                yield event
            return
        job_id = request.job_id
        if job_id:
            try:
                check_job_id(job_id)
            except JobIdError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if job_id and not request.sha256:
            job = self.jobs.get(job_id)
            if job is None:
                yield pb.BenchmarkEvent(
                    result=pb.BenchmarkResult(
                        error_kind=pb.ERROR_KIND_NOT_FOUND,
                        error_message=f"no job {job_id} on this agent (restarted, or finished "
                        "more than 10 minutes ago); send the request again with its sha256",
                    )
                )
                return
        else:
            sha = await self._sha_or_abort(request.sha256, context)
            options = with_defaults(request.options)
            problem = validate(options)
            if problem:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, pb.ERROR_KIND_BAD_REQUEST,
                             problem)
            job = self.jobs.get(job_id) if job_id else None
            if job is not None and not job.same_request(sha, options):
                await context.abort(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"job_id {job_id} belongs to a benchmark of model {job.sha256[:12]} with "
                    "other options; choose a new job id",
                )
            if job is None:
                entry = self.cache.pin(sha)
                if entry is None:
                    yield _not_held(sha, f"model {sha[:12]}")
                    return
                samples = options.inputs_sha256
                if samples and self.cache.pin(samples) is None:  # pinned like the model
                    self.cache.unpin(sha)
                    yield _not_held(sha, f"inputs file {samples[:12]}")
                    return
                job = Job(job_id, sha, str(self.cache.models_dir / sha), entry.format, options)
                self.jobs.add(job)
                self.bench_queue.submit(job)
        stream = job.attach()
        try:
            while True:
                item = await stream.get()
                if isinstance(item, pb.BenchmarkResult):
                    yield pb.BenchmarkEvent(result=item)
                    return
                yield pb.BenchmarkEvent(progress=item)
        finally:
            job.detach(stream)
            if not job.job_id and not job.streams and job.state != "done":
                self.bench_queue.withdraw(job)

    def _measure(self, job: Job, on_progress) -> pb.BenchmarkResult:
        """Runs in the benchmark worker thread."""
        if job.cancel.is_set():
            result = pb.BenchmarkResult(
                error_kind=pb.ERROR_KIND_BAD_REQUEST, error_message="benchmark cancelled"
            )
        else:
            result = benchmark_in_child(
                job.path,
                job.model_format,
                job.options,
                on_progress=on_progress,
                cancelled=job.cancel.is_set,
            )
        result.sha256 = job.sha256
        return result

    def _job_ended(self, job: Job) -> None:
        """On the loop, when a job leaves the queue for good: releases its pin."""
        self.cache.unpin(job.sha256)
        self.cache.touch(job.sha256)
        if job.options.inputs_sha256:
            self.cache.unpin(job.options.inputs_sha256)
        if job.result is None and job.state == "done":  # withdrawn before it ran
            job.result = pb.BenchmarkResult(
                sha256=job.sha256,
                error_kind=pb.ERROR_KIND_BAD_REQUEST,
                error_message="benchmark cancelled by the caller",
            )
        self.jobs.ended(job)

    async def Infer(self, request, context) -> pb.InferReply:
        sha = await self._sha_or_abort(request.sha256, context)
        if not request.inputs:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, pb.ERROR_KIND_BAD_REQUEST,
                         "Infer needs at least one input tensor")
        try:
            arrays = [tensor_to_array(t) for t in request.inputs]
        except (TypeError, ValueError) as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, pb.ERROR_KIND_BAD_REQUEST,
                         f"bad input tensor: {exc}")
        entry = self.cache.pin(sha)
        if entry is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, pb.ERROR_KIND_UNKNOWN_MODEL,
                         f"model {sha[:12]} is not in this agent's cache")
        loop = asyncio.get_running_loop()
        key = (sha, request.runtime, request.threads)
        try:
            outputs, compute_ms = await loop.run_in_executor(
                self._infer,
                self.infer_pool.infer,
                str(self.cache.models_dir / sha),
                entry.format,
                request.runtime,
                request.threads,
                arrays,
                request.raw,
            )
            self._infer_holds(key)
        except InferFailure as failure:
            if failure.kind in INFER_WORKER_KEEPS:
                self._infer_holds(key)
            elif failure.kind in ("crash", "timeout"):  # the worker was restarted empty
                self._infer_drop_all()
            status, kind = INFER_FAILURES.get(
                failure.kind, (grpc.StatusCode.INTERNAL, pb.ERROR_KIND_RUN_FAILED)
            )
            await _abort(context, status, kind, failure.message)
        finally:
            self.cache.unpin(sha)
        reply = pb.InferReply(compute_ms=compute_ms)
        reply.outputs.extend(array_to_tensor(o, f"output_{i}") for i, o in enumerate(outputs))
        return reply

    def _infer_holds(self, key: tuple[str, str, int]) -> None:
        if key in self._infer_loaded:
            self._infer_loaded.move_to_end(key)
            return
        if self.cache.pin(key[0]) is None:
            return
        self._infer_loaded[key] = None
        while len(self._infer_loaded) > KEEP_LOADED:
            old, _ = self._infer_loaded.popitem(last=False)
            self.cache.unpin(old[0])

    def _infer_drop_all(self) -> None:
        while self._infer_loaded:
            old, _ = self._infer_loaded.popitem(last=False)
            self.cache.unpin(old[0])

    def close(self) -> None:
        from device_agent.measure.runner import close_spare_worker

        self.bench_queue.close()
        self.infer_pool.close()
        close_spare_worker()
        for pool in (self._control, self._infer):
            pool.shutdown(wait=False, cancel_futures=True)


def _not_held(sha: str, what: str) -> pb.BenchmarkEvent:
    """The result of a benchmark whose model or inputs file this agent's cache lacks."""
    return pb.BenchmarkEvent(
        result=pb.BenchmarkResult(
            sha256=sha,
            error_kind=pb.ERROR_KIND_UNKNOWN_MODEL,
            error_message=f"{what} is not in this agent's cache; push it first",
        )
    )
