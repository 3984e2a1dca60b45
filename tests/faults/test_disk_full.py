"""An agent whose disk is full: a push is refused RESOURCE_EXHAUSTED with the bytes free and
needed, its partial file is removed, the agent goes on serving, and the host says it in one line.

The disk is real and small: a 2 MiB tmpfs mounted for the module (root only; skipped with the
reason elsewhere), holding the cache of a real agent process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from device_agent.protocol import edgeloop_pb2 as pb
from tests.faults.agent_helpers import insecure_stub, onnx_model, push, sha, wait_for
from toolkit.transport.local import AgentProcess

DISK_MIB = 2
CHUNK = 256 * 1024
BYTES = re.compile(r"[\d.]+ MiB \([\d,]+ bytes\) free in .+, [\d.]+ MiB \([\d,]+ bytes\) needed")


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted after the module."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the agent's cache needs root")
    folder = tmp_path_factory.mktemp("small-disk")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def agent(small_disk) -> Iterator[AgentProcess]:
    """A real agent whose model cache is on the small disk."""
    agent = AgentProcess(small_disk / "cache")
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def stub(agent):
    channel, stub = insecure_stub(agent)
    with contextlib.closing(channel):
        yield stub


def _partial_files(small_disk: Path) -> list[str]:
    return sorted(p.name for p in (small_disk / "cache" / "tmp").iterdir())


def _free(folder: Path) -> int:
    return os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize


def test_a_push_bigger_than_the_free_space_is_refused_with_bytes_free_and_needed(
    small_disk, stub
):
    model = onnx_model(elements=(DISK_MIB + 1) * 2**18)  # 3 MiB of weights on a 2 MiB disk
    with pytest.raises(grpc.RpcError) as refused:
        push(stub, model)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    detail = refused.value.details()
    assert "no space left" in detail and BYTES.search(detail), detail
    assert f"{len(model):,} bytes) needed" in detail
    assert _partial_files(small_disk) == []
    assert stub.Health(pb.HealthRequest(), timeout=10).ok
    small = onnx_model(elements=1024)  # what fits still goes in
    assert push(stub, small).sha256 == sha(small)


def test_a_disk_that_fills_during_a_push_ends_it_cleanly_and_the_agent_recovers(
    small_disk, stub
):
    model = onnx_model(elements=2**18, seed=2.0)  # 1 MiB: it fits when the push begins
    filler = small_disk / "filler"

    def chunks():
        yield pb.ModelChunk(data=model[:CHUNK], sha256=sha(model), name="m",
                            size_bytes=len(model))
        wait_for(lambda: _partial_files(small_disk), 30, "the push to begin (its temporary file)")
        with filler.open("wb", buffering=0) as f:  # something else on the device fills its disk
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        for start in range(CHUNK, len(model), CHUNK):
            yield pb.ModelChunk(data=model[start : start + CHUNK])

    try:
        with pytest.raises(grpc.RpcError) as refused:
            stub.PushModel(chunks(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        detail = refused.value.details()
        assert "no space left" in detail and BYTES.search(detail), detail
        assert "Unexpected" not in detail
        assert _partial_files(small_disk) == []  # removed before the client heard
    finally:
        filler.unlink(missing_ok=True)
    assert _free(small_disk) >= len(model)
    assert push(stub, model).sha256 == sha(model)  # room again: the same push succeeds
    assert stub.HasModel(pb.ModelRef(sha256=sha(model)), timeout=10).present


def test_the_host_shows_a_full_disk_in_one_line(small_disk, agent, tmp_path):
    model = tmp_path / "big.onnx"
    model.write_bytes(onnx_model(elements=(DISK_MIB + 1) * 2**18, seed=3.0))
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", "profile", str(model), "--device",
         agent.address],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "EDGELOOP_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "no space left" in lines[0]
    assert BYTES.search(lines[0]) and agent.address in lines[0], lines[0]
    assert _partial_files(small_disk) == []
