"""Bad model files and dying benchmark children: clear error kinds, and the agent lives on."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest

from toolkit.measurement import BenchmarkOptions
from toolkit.transport.grpc_client import DeviceClient
from toolkit.transport.local import AgentProcess

QUICK = BenchmarkOptions(
    warmup_runs=1, warmup_min_seconds=0.01, min_runs=2, min_seconds=0.01, idle_seconds=0.01,
    power_sensor="none", threads=1, timeout_seconds=120,
)  # fmt: skip
FAILED_CLEANLY = {"LOAD_FAILED", "RUN_FAILED", "CRASHED", "UNSAFE_MODEL"}
HEADS = {"tflite": b"\x00\x00\x00\x00TFL3", "onnx": b"\x08\x08\x12\x00", "pt2": b"PK\x03\x04"}


def _garbage(fmt: str, size: int = 4096) -> bytes:
    rng = random.Random(fmt)
    return HEADS[fmt] + bytes(rng.randrange(256) for _ in range(size))


@pytest.mark.parametrize("fmt", ["tflite", "onnx", "pt2"])
def test_garbage_after_the_right_magic_is_a_load_failure_not_a_dead_agent(agent, tmp_path, fmt):
    """Guards the child isolation and the classification of load errors (a runtime that
    aborts on garbage becomes CRASHED as data; the agent keeps answering)."""
    path = tmp_path / f"garbage.{fmt}"
    path.write_bytes(_garbage(fmt))
    m = agent.benchmark(path, QUICK)
    assert m.error_kind in FAILED_CLEANLY, (m.error_kind, m.error_message)
    assert m.error_message
    assert agent.health().ok


@pytest.mark.parametrize("fmt", ["tflite", "onnx", "pt2"])
def test_a_truncated_model_fails_with_a_clear_kind(agent, model_files, tmp_path, fmt):
    data = Path(getattr(model_files, fmt)).read_bytes()
    path = tmp_path / f"truncated.{fmt}"
    path.write_bytes(data[: len(data) // 2])
    m = agent.benchmark(path, QUICK)
    assert m.error_kind in FAILED_CLEANLY, (m.error_kind, m.error_message)
    assert agent.health().ok


@pytest.mark.parametrize("fmt", ["tflite", "onnx", "pt2"])
def test_bit_flipped_models_either_run_or_fail_cleanly(agent, model_files, tmp_path, fmt):
    """A flipped bit in a weight may still run; in a header or offset it must fail as data."""
    data = bytearray(Path(getattr(model_files, fmt)).read_bytes())
    rng = random.Random(7)
    for i in rng.sample(range(8, len(data)), 32):
        data[i] ^= 1 << rng.randrange(8)
    path = tmp_path / f"flipped.{fmt}"
    path.write_bytes(bytes(data))
    m = agent.benchmark(path, QUICK)
    assert m.ok or m.error_kind in FAILED_CLEANLY, (m.error_kind, m.error_message)
    assert agent.health().ok


def _children(pid: int) -> list[int]:
    """Every process below `pid`: benchmark children are the zygote's (the agent's child)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        for c in text:
            out.append(int(c))
            try:
                out.extend(_children(int(c)))
            except FileNotFoundError:  # exited meanwhile
                pass
    return out


def _running_benchmark_child(agent_pid: int) -> int:
    """The child that holds a job: the only one whose CPU time is limited (set when the job
    is handed out; the spare and the Infer worker have none)."""
    for child in _children(agent_pid):
        try:
            limits = Path(f"/proc/{child}/limits").read_text()
        except FileNotFoundError:
            continue
        line = next(x for x in limits.splitlines() if x.startswith("Max cpu time"))
        if "unlimited" not in line:
            return child
    raise AssertionError("no benchmark child with a job found")


@pytest.fixture(scope="module")
def own_agent(tmp_path_factory):
    """An agent whose process id the test knows (to find its children)."""
    process = AgentProcess(tmp_path_factory.mktemp("cache"))
    client = DeviceClient(process.address)
    yield process, client
    client.close()
    process.stop()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_benchmark_child_killed_by_a_signal_is_crashed_as_data(own_agent, model_files, sig):
    """Guards runner.benchmark_in_child's crash path: the result names the signal."""
    process, client = own_agent
    sent = []

    def on_progress(p) -> None:
        if p.phase in ("warmup", "timed") and not sent:
            os.kill(_running_benchmark_child(process.pid), sig)
            sent.append(sig)

    options = BenchmarkOptions(min_seconds=30, min_runs=2, power_sensor="none", threads=1,
                               timeout_seconds=120, idle_seconds=0.01)
    m = client.benchmark(model_files.tflite, options, on_progress=on_progress)
    assert sent, "the benchmark ended before the signal was sent"
    assert m.error_kind == "CRASHED" and sig.name in m.error_message, m.error_message
    assert m.wall_s < 30
    assert client.health().ok and client.benchmark(model_files.tflite, QUICK).ok
