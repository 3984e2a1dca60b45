"""A push's chunks hashed and written in order on a thread of its own, a few MiB ahead.

With one chunk written at a time, receiving the next one waited whenever the sha256 and the
write of the last took longer than the network; the agent then stopped reading, gRPC's
flow-control window filled, and the client stopped sending. A lane queues up to AHEAD_BYTES
behind the chunk being written, so the three overlap. Measured on 2 vCPUs (64 MiB, loopback,
bench/bench_core.py --parts push, three runs each): 551, 494, 590 MB/s one at a time;
571, 635, 585 MB/s with a 4 MiB lane.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor

from device_agent.cache.model_cache import CachedModel, PushWriter

AHEAD_BYTES = 4 << 20
"""Bytes received and queued for writing, beyond the chunk being written: the memory a push
may hold besides gRPC's own buffers (a chunk larger than this waits until the lane is empty)."""


class WriteLane:
    """Feeds one PushWriter from the event loop. Always call `close()` (in a finally)."""

    def __init__(self, writer: PushWriter, ahead_bytes: int = AHEAD_BYTES) -> None:
        self._writer = writer
        self._ahead_bytes = ahead_bytes
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-lane")
        self._queued: collections.deque[tuple[asyncio.Future, int]] = collections.deque()
        self._queued_bytes = 0

    async def _wait_oldest(self) -> None:
        future, size = self._queued.popleft()
        self._queued_bytes -= size
        await future

    async def write(self, data) -> None:
        """Queues `data` (bytes-like) for hashing and writing, after waiting while the lane
        holds too much; raises the error of an earlier write that failed."""
        while self._queued and self._queued_bytes + len(data) > self._ahead_bytes:
            await self._wait_oldest()
        loop = asyncio.get_running_loop()
        self._queued.append((loop.run_in_executor(self._thread, self._writer.write, data),
                             len(data)))
        self._queued_bytes += len(data)

    async def commit(self) -> CachedModel:
        """Waits for every queued write, then commits the push (digest, size, format)."""
        while self._queued:
            await self._wait_oldest()
        return await asyncio.get_running_loop().run_in_executor(self._thread,
                                                                self._writer.commit)

    async def close(self) -> None:
        """Waits for writes still queued (their errors are dropped: the failure that ended
        the push is already on its way), so that the writer's abort() never races them."""
        futures = [future for future, _ in self._queued]
        self._queued.clear()
        if futures:
            await asyncio.wait(futures)
            for future in futures:
                if not future.cancelled():
                    future.exception()
        self._thread.shutdown(wait=False)
