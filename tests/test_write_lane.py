"""The agent's write lane: chunks land in order under their digest, the lane never holds
more than it may, a failed write ends the push, the agent's heap setting takes, and early
writeback starts without changing what is stored."""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import random
import threading
import time

import pytest

from device_agent.cache import writeback
from device_agent.cache.model_cache import BadDigestError, ModelCache
from device_agent.server.heap import keep_freed_buffers
from device_agent.server.write_lane import WriteLane


def _run(coroutine) -> None:
    """asyncio.run in a thread of its own: the browser tests' sync API leaves a loop marked
    running on the main thread of the test process."""
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _chunks(total: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    data = b"\x08" + os.urandom(total - 1)  # an ONNX-looking first byte
    cuts = sorted(rng.sample(range(1, total), 40))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, total])]


def test_chunks_are_written_in_order_and_the_lane_stays_within_its_bytes(tmp_path):
    cache = ModelCache(tmp_path)
    parts = _chunks(3 << 20, seed=1)
    whole = b"".join(parts)
    sha = hashlib.sha256(whole).hexdigest()
    writer = cache.begin_push(sha, "m.onnx", len(whole), "onnx")
    held, most = [0], [0]
    lock = threading.Lock()
    slow_write = writer.write

    def write(data) -> None:  # slower than the loop feeds it: the lane fills up
        time.sleep(0.002)
        slow_write(data)
        with lock:
            held[0] -= len(data)

    writer.write = write
    ahead = 256 << 10

    async def push() -> None:
        lane = WriteLane(writer, ahead_bytes=ahead)
        try:
            for part in parts:
                await lane.write(part)
                with lock:
                    held[0] += len(part)
                    most[0] = max(most[0], held[0])
            await lane.commit()
        finally:
            await lane.close()
            writer.abort()

    _run(push())
    assert (tmp_path / "models" / sha).read_bytes() == whole
    biggest = max(len(p) for p in parts)
    assert most[0] <= ahead + 2 * biggest  # queued + the one being written + the newest


def test_a_write_that_fails_ends_the_push_and_leaves_no_file(tmp_path):
    cache = ModelCache(tmp_path)
    data = b"\x08" + os.urandom(4000)
    writer = cache.begin_push(hashlib.sha256(data).hexdigest(), "m.onnx", 1000, "onnx")

    async def push() -> None:
        lane = WriteLane(writer, ahead_bytes=1000)
        try:
            for i in range(0, len(data), 500):
                await lane.write(data[i : i + 500])
            await lane.commit()
        finally:
            await lane.close()
            writer.abort()

    with pytest.raises(BadDigestError, match="more than the announced 1000 bytes"):
        _run(push())
    assert not list((tmp_path / "tmp").iterdir())
    assert not list((tmp_path / "models").iterdir())


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's; other C libraries keep their own defaults",
)
def test_the_agents_heap_setting_takes_on_glibc():
    assert keep_freed_buffers() is True


@pytest.mark.skipif(not writeback.AVAILABLE, reason="sync_file_range is Linux's")
def test_early_writeback_starts_on_a_real_file_and_refuses_a_closed_one(tmp_path):
    path = tmp_path / "f.bin"
    with open(path, "wb", buffering=0) as f:
        f.write(os.urandom(1 << 20))
        assert writeback.start_writeback(f.fileno(), 0, 1 << 20) is True
        fd = f.fileno()
    assert writeback.start_writeback(fd, 0, 1 << 20) is False  # closed: EBADF, not a crash


def test_a_push_longer_than_the_writeback_step_is_stored_byte_for_byte(tmp_path):
    cache = ModelCache(tmp_path)
    data = b"\x08" + os.urandom(writeback.EVERY_BYTES * 2 + 12345)
    sha = hashlib.sha256(data).hexdigest()
    writer = cache.begin_push(sha, "m.onnx", len(data), "onnx")
    try:
        for i in range(0, len(data), 1 << 20):
            writer.write(memoryview(data)[i : i + (1 << 20)])
        writer.commit()
    finally:
        writer.abort()
    assert (tmp_path / "models" / sha).read_bytes() == data
