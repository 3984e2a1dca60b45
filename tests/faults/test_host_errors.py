"""The host's errors when the agent dies or the device does not exist: clear, fast, one line.

Real agents (`toolkit.transport.local.AgentProcess`) and the real `edgeloop` command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from toolkit.errors import AgentLostError, AgentUnreachableError
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.grpc_client import DeviceClient
from toolkit.transport.local import AgentProcess

LONG_RUN = BenchmarkOptions(runtime="onnx", min_runs=10, min_seconds=30.0, timeout_seconds=60.0)


def edgeloop(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGELOOP_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "toolkit.cli.main", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_a_sigkilled_agent_fails_the_running_benchmark_within_a_second(model_files, tmp_path):
    """Guards: a lost stream whose agent is gone ends at once with AgentLostError naming the
    device (the reattach probe sees the refused connection), instead of waiting out a
    reconnect window or the old `timeout*4+60` deadline. A dying agent's listening socket may
    still accept one connection: the probe then retries in 0.5 s slices (hence < 1.5 s)."""
    agent = AgentProcess(tmp_path / "cache")
    client = DeviceClient(agent.address, name="doomed-box")
    running, outcome = threading.Event(), {}

    def on_progress(p) -> None:
        if p.phase in ("warmup", "timed"):
            running.set()

    def bench() -> None:
        try:
            outcome["result"] = client.benchmark(model_files.onnx, LONG_RUN, on_progress)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    worker = threading.Thread(target=bench, daemon=True)
    try:
        worker.start()
        assert running.wait(60), "the benchmark never started"
        killed_at = time.monotonic()
        os.kill(agent.pid, signal.SIGKILL)
        worker.join(15)
        assert not worker.is_alive(), "the host still waits 15 s after the agent died"
    finally:
        client.close()
        try:
            os.killpg(agent.pid, signal.SIGKILL)  # the orphaned benchmark child
        except ProcessLookupError:
            pass
        agent.stop()
    error = outcome.get("error")
    waited = outcome["at"] - killed_at
    print(f"agent SIGKILLed mid-benchmark: host error after {waited:.2f} s: {error}")
    assert isinstance(error, AgentLostError) and isinstance(error, ConnectionError), outcome
    assert "doomed-box" in str(error) and "\n" not in str(error)
    assert waited < 1.5


def test_an_unknown_device_is_one_clear_line_and_a_failing_exit(model_files, tmp_path):
    """Guards: a device name that is no profile, and an address where nothing listens, end the
    command with one line naming the device and exit 1 (no traceback, no wait)."""
    done = edgeloop("profile", str(model_files.onnx), "--device", "no-such-device",
                    home=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "no-such-device" in done.stderr
    assert "Traceback" not in done.stderr

    started = time.monotonic()
    done = edgeloop("profile", str(model_files.onnx), "--device", "127.0.0.1:1", home=tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "127.0.0.1:1" in last, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30


def test_connecting_to_an_address_where_no_agent_listens_raises_unreachable():
    """Guards: the client's connect wait is bounded and its error is both ours and the
    builtin ConnectionError."""
    started = time.monotonic()
    with pytest.raises(AgentUnreachableError, match="no agent answered") as caught:
        DeviceClient("127.0.0.1:1", connect_timeout_s=2.0, name="nobody")
    assert isinstance(caught.value, ConnectionError)
    assert time.monotonic() - started < 5


def test_a_local_agent_that_exits_at_start_raises_unreachable_with_its_own_error(tmp_path):
    """Guards AgentProcess's start failure: the agent's one-line error and exit code, not a
    ValueError from reading its closed output, and not a wait for the start timeout."""
    started = time.monotonic()
    with pytest.raises(AgentUnreachableError) as caught:
        AgentProcess(tmp_path / "cache", ("--child-open-files", "-1"))
    message = str(caught.value)
    assert "exited with code 2" in message, message
    assert "--child-open-files: expected >= 0, got -1" in message, message
    assert time.monotonic() - started < 30
