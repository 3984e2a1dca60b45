"""The benchmark zygote (device_agent/measure/zygote.py): every benchmark in a fresh process it
forked, under the children's limits and in a process group of its own; a timeout kills that
child and the zygote serves the next; a dead zygote is replaced after the benchmark; a zygote
whose imports started a thread refuses to fork."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from device_agent.measure import limits as child_limits
from device_agent.measure import runner
from device_agent.measure.limits import ChildLimits, benchmark_cpu_seconds
from device_agent.protocol import edgeloop_pb2 as pb

OPTIONS = pb.BenchmarkOptions(
    warmup_runs=1, warmup_min_seconds=0.01, min_runs=3, min_seconds=0.05, idle_seconds=0.01,
    power_sensor="none", threads=1, timeout_seconds=60,
)  # fmt: skip


def _limit(pid: int, name: str) -> str:
    line = next(
        x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith(name)
    )
    return line[len(name) :].split()[0]  # the soft limit


def _kids(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            pass
    return out


@pytest.fixture
def zygote():
    """A primed spare (the zygote) in this process, under limits the test can recognise."""
    previous = child_limits.current()
    child_limits.configure(ChildLimits(address_space_mb=3000, open_files=77))
    runner.prime_spare_worker()
    try:
        yield runner._SPARE._zygote
    finally:
        runner.close_spare_worker()
        child_limits.configure(previous)


def _benchmark(model: Path, options: pb.BenchmarkOptions, zygote_pid: int, seen: dict):
    """Runs one benchmark, recording each child of the zygote seen while it ran: its limits
    (address space, files, CPU seconds) and its session id."""

    def on_progress(p: pb.Progress) -> None:
        for child in _kids(zygote_pid):
            if child not in seen:
                try:
                    seen[child] = (
                        _limit(child, "Max address space"),
                        _limit(child, "Max open files"),
                        _limit(child, "Max cpu time"),
                        os.getsid(child),
                    )
                except (FileNotFoundError, ProcessLookupError):
                    pass

    return runner.benchmark_in_child(str(model), "tflite", options, on_progress)


def test_each_benchmark_runs_in_a_fresh_forked_process_under_the_limits(zygote, model_files):
    assert zygote is not None and zygote.wait_ready(120), zygote and zygote.problem
    seen: dict[int, tuple] = {}
    for _ in range(2):
        result = _benchmark(model_files.tflite, OPTIONS, zygote.process.pid, seen)
        assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
        assert result.latency.n >= 3
    assert len(seen) == 2, seen  # one process per benchmark, never reused
    for pid, (address_space, files, cpu, session) in seen.items():
        assert address_space == str(3000 * 2**20)
        assert files == "77"
        assert cpu == str(benchmark_cpu_seconds(OPTIONS.timeout_seconds))
        assert session == pid  # its own process group: a kill takes what it started too
    assert runner._SPARE._zygote is zygote and zygote.process.poll() is None
    maps = Path(f"/proc/{zygote.process.pid}/maps").read_text()
    assert str(model_files.tflite) not in maps  # no model is ever loaded in the zygote


def test_a_forked_child_past_its_timeout_is_killed_and_the_zygote_serves_the_next(
    zygote, model_files
):
    slow = pb.BenchmarkOptions()
    slow.CopyFrom(OPTIONS)
    slow.min_seconds, slow.timeout_seconds = 60, 2
    result = runner.benchmark_in_child(str(model_files.tflite), "tflite", slow)
    assert result.error_kind == pb.ERROR_KIND_TIMEOUT, result.error_message
    assert result.wall_s < 10
    assert not _kids(zygote.process.pid)  # reaped
    again = runner.benchmark_in_child(str(model_files.tflite), "tflite", OPTIONS)
    assert again.error_kind == pb.ERROR_KIND_NONE, again.error_message


def test_a_dead_zygote_is_replaced_after_the_next_benchmark(zygote, model_files):
    assert zygote.wait_ready(120)
    os.kill(zygote.process.pid, signal.SIGKILL)
    zygote.process.wait(timeout=30)
    # this benchmark gets a spawned worker; the zygote is started again once it has ended
    result = runner.benchmark_in_child(str(model_files.tflite), "tflite", OPTIONS)
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    fresh = runner._SPARE._zygote
    assert fresh is not zygote and fresh.wait_ready(120), fresh.problem
    seen: dict[int, tuple] = {}
    result = _benchmark(model_files.tflite, OPTIONS, fresh.process.pid, seen)
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert len(seen) == 1


def test_a_zygote_whose_imports_started_a_thread_refuses_to_fork():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    code = (
        "import sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "from device_agent.measure import zygote\n"
        "sys.exit(zygote.main(['--control-fd', sys.argv[1]]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
    )
    theirs.close()
    try:
        ours.settimeout(120)
        message = ours.recv(256).decode()
        assert message.startswith("unsafe 2 threads"), message
        assert process.wait(timeout=60) == 3
    finally:
        ours.close()
        if process.poll() is None:
            process.kill()
