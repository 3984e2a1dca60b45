"""Children that load models run under resource limits, and as another user with --run-as."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from device_agent.measure import limits as child_limits
from device_agent.measure.limits import ChildLimits, benchmark_cpu_seconds
from tests.fixtures_run_as import (
    SHORT_BENCHMARK,
    RunAsUnavailable,
    children,
    look,
    reachable_by_nobody,
)
from toolkit.transport.grpc_client import DeviceClient
from toolkit.transport.local import AgentProcess

QUICK = SHORT_BENCHMARK
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs the agent to be root")


def _limit(pid: int, name: str) -> str:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if x.startswith(name))
    return line[len(name):].split()[0]  # the soft limit


def _children(pid: int) -> list[int]:
    """Children that run a program of their own: a child caught between fork and exec still
    shows the agent's command line (and the agent's uid, which it drops at exec)."""
    parent = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [c for c in children(pid)
            if (r := look(c, parent)) is not None and not r.runs_agent_program]


def _uid(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith("Uid:"))
    return int(line.split()[1])


def _record_uids(pid: int, seen: dict[int, int]) -> None:
    for child in _children(pid):
        try:
            seen[child] = _uid(child)
        except OSError:  # exited meanwhile
            pass


def test_a_spawned_benchmark_child_has_address_space_and_open_file_limits():
    """Guards runner._spawn_worker applying ChildLimits to the process it starts."""
    from device_agent.measure.runner import _spawn_worker

    previous = child_limits.current()
    child_limits.configure(ChildLimits(address_space_mb=3000, open_files=77))
    try:
        child = _spawn_worker()
        try:
            deadline = time.monotonic() + 30  # the child sets them on itself, first thing
            while _limit(child.pid, "Max open files") != "77" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _limit(child.pid, "Max address space") == str(3000 * 2**20)
            assert _limit(child.pid, "Max open files") == "77"
        finally:
            child.stdin.close()
            child.wait(timeout=60)
    finally:
        child_limits.configure(previous)


def test_a_benchmark_gets_a_cpu_limit_derived_from_its_timeout(model_files):
    """Guards benchmark_in_child setting RLIMIT_CPU = (timeout + margin) x cores."""
    from device_agent.measure.runner import benchmark_in_child
    from device_agent.protocol import edgeloop_pb2 as pb

    seen: list[str] = []

    def on_progress(p) -> None:
        if not seen:
            seen.extend(_limit(c, "Max cpu time") for c in _children(os.getpid()))

    options = pb.BenchmarkOptions(timeout_seconds=45, min_runs=2, min_seconds=0.01,
                                  power_sensor="none", threads=1)
    result = benchmark_in_child(str(model_files.tflite), "tflite", options, on_progress)
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert str(benchmark_cpu_seconds(45)) in seen, seen


def test_a_model_beyond_the_address_space_limit_fails_as_data_not_a_hang(model_files, tmp_path):
    """torch needs ~0.85 GB of address space to load a model; under 300 MB the child fails
    (load failure or crash) quickly, and the agent answers the next request."""
    process = AgentProcess(tmp_path / "cache", ("--child-memory-mb", "300"))
    try:
        with DeviceClient(process.address) as client:
            began = time.monotonic()
            m = client.benchmark(model_files.pt2, QUICK)
            assert m.error_kind in ("LOAD_FAILED", "CRASHED"), (m.error_kind, m.error_message)
            assert time.monotonic() - began < 100
            assert client.health().ok
    finally:
        process.stop()


@pytest.fixture
def python_reachable_by_nobody():
    """Where the agent's Python sits under a folder `nobody` cannot enter, grants traverse on
    exactly those folders for the test (`tests.fixtures_run_as`), so the run-as path runs here
    instead of being skipped."""
    try:
        with reachable_by_nobody():
            yield
    except RunAsUnavailable as exc:
        pytest.skip(str(exc))


@ROOT_ONLY
def test_run_as_starts_benchmark_and_infer_children_as_that_user(
        model_files, python_reachable_by_nobody):
    """Guards --run-as: the agent stays root, its children run as nobody, and they can still
    read the pushed models."""
    nobody = pwd.getpwnam("nobody")
    folder = Path(tempfile.mkdtemp(prefix="edgeloop-runas-"))
    folder.chmod(0o755)
    process = AgentProcess(folder / "cache", ("--run-as", "nobody"))
    try:
        with DeviceClient(process.address) as client:
            seen: dict[int, int] = {}

            def on_progress(p) -> None:
                _record_uids(process.pid, seen)

            m = client.benchmark(model_files.tflite, QUICK, on_progress=on_progress)
            assert m.ok, m.error_message
            out = client.infer(model_files.tflite, [np.zeros((1, 1, 8, 8), np.float32)])
            assert out[0].shape == (1, 10)
            _record_uids(process.pid, seen)
            assert _uid(process.pid) == 0
            assert seen and set(seen.values()) == {nobody.pw_uid}, seen
    finally:
        process.stop()
        subprocess.run(["rm", "-rf", str(folder)], check=False)


@ROOT_ONLY
def test_run_as_is_refused_when_the_agent_is_not_root():
    """One line on stderr, exit code 2, nothing served."""
    folder = Path(tempfile.mkdtemp(prefix="edgeloop-runas-"))
    folder.chmod(0o777)
    code = (
        "import os, sys\n"
        "import device_agent.__main__ as cli\n"
        "import device_agent.server.app, device_agent.measure.limits  # before losing root\n"
        "os.setgid(65534); os.setuid(65534)\n"
        f"sys.exit(cli.main(['serve', '--port', '0', '--cache-dir', {str(folder / 'c')!r},"
        " '--run-as', 'root']))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, cwd="/")
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)
    assert done.returncode == 2, done.stderr
    assert "--run-as root: the agent must run as root" in done.stderr
    assert "listening" not in done.stdout


@ROOT_ONLY
def test_run_as_a_user_who_cannot_run_the_agent_is_refused_at_start(tmp_path):
    """Instead of every child dying at exec, the agent refuses to start, naming the folder."""
    try:
        ChildLimits(run_as="nobody")
        pytest.skip("nobody can run this agent's Python here (the other run-as test covers it)")
    except child_limits.ChildLimitsError:
        pass
    done = subprocess.run(
        [sys.executable, "-m", "device_agent", "serve", "--port", "0",
         "--cache-dir", str(tmp_path / "c"), "--run-as", "nobody"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and "listening" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not searchable by that user" in lines[0], done.stderr
