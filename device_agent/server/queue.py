"""One benchmark at a time per device, first come first served, on the agent's event loop.

Jobs wait in a FIFO; one runner task hands the head job to a single worker thread and
awaits it, so control calls never wait behind a benchmark. Every waiting job is told how
many are ahead of it when it is queued and whenever that number changes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.server.jobs import Job

RunJob = Callable[[Job, Callable[[pb.Progress], None]], pb.BenchmarkResult]
"""Runs a job in the worker thread: (job, on_progress) -> result. Must not raise."""


class BenchmarkQueue:
    """FIFO of benchmark jobs run one at a time in one worker thread.

    Args:
        run: measures one job (called in the worker thread).
        on_end: called on the loop when a job leaves the queue for good (finished or
            withdrawn), before its result is published; releases what the job held.
    """

    def __init__(self, run: RunJob, on_end: Callable[[Job], None]) -> None:
        self._run = run
        self._on_end = on_end
        self._pending: deque[Job] = deque()
        self.running: Optional[Job] = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="benchmark")
        self._runner: Optional[asyncio.Task] = None

    @property
    def waiting(self) -> int:
        """Jobs queued or running."""
        return len(self._pending) + (self.running is not None)

    def submit(self, job: Job) -> None:
        """Queues a job (on the loop); its streams get 'queued, N ahead' at once when N > 0."""
        job.ahead = -1
        self._pending.append(job)
        self._tell_positions()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._drain())

    def withdraw(self, job: Job) -> None:
        """Cancels a job: removed if still queued, its child killed if running."""
        if job in self._pending:
            self._pending.remove(job)
            job.state = "done"
            self._on_end(job)
            self._tell_positions()
        elif job is self.running:
            job.cancel.set()

    def _tell_positions(self) -> None:
        busy = 1 if self.running is not None else 0
        for i, job in enumerate(self._pending):
            job.set_ahead(i + busy)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            job = self._pending.popleft()
            job.state = "running"
            self.running = job
            self._tell_positions()

            def progress(event: pb.Progress, job: Job = job) -> None:
                loop.call_soon_threadsafe(job.publish, event)

            try:
                result = await loop.run_in_executor(self._worker, self._run, job, progress)
            except Exception as exc:  # the run contract says never; keep the queue alive
                result = pb.BenchmarkResult(
                    error_kind=pb.ERROR_KIND_CRASHED,
                    error_message=f"agent error: {type(exc).__name__}: {exc}",
                )
            self.running = None
            job.result = result
            self._on_end(job)  # releases the model before the client can see the result
            job.finish(result)
        self._tell_positions()

    def close(self) -> None:
        """Cancels every job (kills a running child) and stops the worker."""
        for job in list(self._pending):
            job.cancel.set()
        self._pending.clear()
        if self.running is not None:
            self.running.cancel.set()
        self._worker.shutdown(wait=False, cancel_futures=True)
