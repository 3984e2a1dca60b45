"""Benchmark jobs: one per accepted request, found again by the client's job id.

A job is created when a Benchmark request is accepted (its model pinned) and lives until
its result has been kept long enough for a client that lost its link to reattach:
FINISHED_KEEP_S after it ended, and at most FINISHED_KEEP finished jobs.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

from device_agent.protocol import edgeloop_pb2 as pb

FINISHED_KEEP_S = 600.0
FINISHED_KEEP = 256
JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class JobIdError(ValueError):
    """A job id that is malformed or already belongs to a different request."""


def check_job_id(job_id: str) -> str:
    """Returns the id if it is 1-128 characters of [A-Za-z0-9._:-], else raises JobIdError."""
    if not JOB_ID.match(job_id):
        raise JobIdError(
            f"job_id: expected 1-128 characters of A-Z a-z 0-9 . _ : -, got {job_id[:40]!r}"
        )
    return job_id


@dataclass(eq=False)
class Job:
    """One benchmark: queued, then running, then done with a result.

    Event delivery happens on the event loop: the runner thread hands events over with
    `loop.call_soon_threadsafe`. Each attached stream holds one asyncio.Queue.
    """

    job_id: str  # "" when the client gave none (then it cannot be reattached)
    sha256: str
    path: str
    model_format: str
    options: pb.BenchmarkOptions  # with defaults filled in
    state: str = "queued"  # "queued" | "running" | "done"
    ahead: int = 0
    last_progress: Optional[pb.Progress] = None
    result: Optional[pb.BenchmarkResult] = None
    ended_unix: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    streams: set = field(default_factory=set)

    def same_request(self, sha256: str, options: pb.BenchmarkOptions) -> bool:
        return self.sha256 == sha256 and self.options == options

    def attach(self) -> asyncio.Queue:
        """A stream to follow this job; it first receives the job's current state."""
        stream: asyncio.Queue = asyncio.Queue()
        self.streams.add(stream)
        if self.state == "done":
            stream.put_nowait(self.result)
        elif self.state == "queued":
            stream.put_nowait(pb.Progress(phase="queued", done=0, total=self.ahead))
        elif self.last_progress is not None:
            stream.put_nowait(self.last_progress)
        return stream

    def detach(self, stream: asyncio.Queue) -> None:
        self.streams.discard(stream)

    def publish(self, event) -> None:
        """Sends a Progress or the final BenchmarkResult to every attached stream."""
        if isinstance(event, pb.Progress):
            self.last_progress = event
        for stream in self.streams:
            stream.put_nowait(event)

    def set_ahead(self, ahead: int) -> None:
        """Tells the attached streams how many jobs are ahead, when that changed."""
        if self.state == "queued" and ahead != self.ahead:
            self.ahead = ahead
            self.publish(pb.Progress(phase="queued", done=0, total=ahead))

    def finish(self, result: pb.BenchmarkResult) -> None:
        self.state = "done"
        self.result = result
        self.ended_unix = self.ended_unix or time.time()
        self.publish(result)


class JobTable:
    """Jobs by client job id: those queued or running, and those finished recently."""

    def __init__(self, keep_s: float = FINISHED_KEEP_S, keep: int = FINISHED_KEEP) -> None:
        self.keep_s = keep_s
        self.keep = keep
        self._active: dict[str, Job] = {}
        self._finished: OrderedDict[str, Job] = OrderedDict()

    def get(self, job_id: str) -> Optional[Job]:
        self._prune()
        return self._active.get(job_id) or self._finished.get(job_id)

    def add(self, job: Job) -> None:
        if job.job_id:
            self._active[job.job_id] = job

    def ended(self, job: Job) -> None:
        """Moves a job that finished (or was withdrawn) to the finished list."""
        if not job.job_id or self._active.get(job.job_id) is not job:
            return
        del self._active[job.job_id]
        job.ended_unix = job.ended_unix or time.time()
        if job.result is not None:
            self._finished[job.job_id] = job
        self._prune()

    def _prune(self) -> None:
        horizon = time.time() - self.keep_s
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if len(self._finished) <= self.keep and oldest.ended_unix >= horizon:
                break
            self._finished.popitem(last=False)

    def __len__(self) -> int:
        return len(self._active) + len(self._finished)
