"""Fleets of many devices against REAL agents: bounded concurrency, per-device timeouts,
progress, and selection by profile tag.

Six agents on loopback ports; a "hung" device is a real agent frozen with SIGSTOP (the kernel
still accepts its connections, nothing answers) and a dead one an agent that was stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.model_files import build_tflite, tiny_cnn
from toolkit.devices.fleet import Fleet
from toolkit.devices.parallel import run_bounded
from toolkit.devices.profile import Budgets, DeviceProfile
from toolkit.errors import ConfigError
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.local import AgentProcess
from toolkit.validate import GateConfig, run_gate

QUICK = BenchmarkOptions(warmup_runs=2, min_runs=20, min_seconds=0.05)
BUDGETS = Budgets(size_kb=1024.0)
AGENTS = 6


@pytest.fixture(scope="module")
def tflite(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return build_tflite(tiny_cnn(), tmp_path_factory.mktemp("scale-model") / "tiny.tflite")


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    started: list[AgentProcess] = []
    try:
        for i in range(AGENTS):
            started.append(AgentProcess(tmp_path_factory.mktemp(f"scale-cache{i}")))
        yield started
    finally:
        for agent in started:
            agent.stop()


@pytest.fixture()
def hung_agent(tmp_path):
    """A real agent frozen with SIGSTOP: connections are accepted by the kernel, never served."""
    agent = AgentProcess(tmp_path / "hung-cache")
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        yield agent
    finally:
        os.kill(agent.pid, signal.SIGCONT)
        agent.stop()


def _profiles(agents, tag_of=lambda i: ()) -> list[DeviceProfile]:
    return [
        DeviceProfile(name=f"dev-{i}", address=a.address, budgets=BUDGETS, tags=tag_of(i))
        for i, a in enumerate(agents)
    ]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
        key=lambda ev: (ev[0], ev[1]),
    )  # an end before a start at the same instant
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_validate_keeps_at_most_max_parallel_devices_in_flight(tflite, agents):
    arrivals: dict[str, float] = {}
    tallies = []

    def progress(report, tally) -> None:  # noqa: ANN001
        arrivals[report.device] = time.perf_counter()
        tallies.append(tally)

    fleet = Fleet("six", tuple(_profiles(agents)))
    report = run_gate(
        tflite, fleet, GateConfig(options=QUICK, max_workers=2, store=False), on_progress=progress
    )

    assert report.passed, [c.message for c in report.checks if not c.passed]
    # Each device's own wall time (measured inside its run) ends when its report arrived.
    intervals = [(arrivals[d.device] - d.duration_s, arrivals[d.device]) for d in report.devices]
    assert _max_overlap(intervals) <= 2
    assert [t.done for t in tallies] == list(range(1, AGENTS + 1))
    assert all(t.in_flight <= 2 and t.failed == 0 for t in tallies)
    assert tallies[-1].remaining == 0


def test_a_hung_device_is_a_named_timeout_while_the_rest_pass(tflite, agents, hung_agent):
    profiles = _profiles(agents[:3])
    profiles.insert(1, DeviceProfile(name="frozen", address=hung_agent.address, budgets=BUDGETS))
    started = time.perf_counter()
    report = run_gate(
        tflite,
        Fleet("with-a-hung-one", tuple(profiles)),
        GateConfig(options=QUICK, max_workers=2, device_timeout_s=3.0, store=False),
    )
    elapsed = time.perf_counter() - started

    by_name = {d.device: d for d in report.devices}
    assert [d.device for d in report.devices] == [p.name for p in profiles]
    assert all(by_name[p.name].passed for p in profiles if p.name != "frozen")
    frozen = by_name["frozen"]
    assert len(frozen.checks) == len(by_name["dev-0"].checks)  # failed, never skipped
    assert all(not c.passed and "timed out after 3 s" in c.message for c in frozen.checks)
    assert not report.passed
    assert elapsed < 60  # the frozen device did not hold the gate up to a client deadline


def test_devices_check_selects_by_tag_names_the_dead_device_and_shows_progress(agents, tmp_path):
    dead = AgentProcess(tmp_path / "dead-cache")
    dead.stop()
    devices = [
        {"name": p.name, "address": p.address, "tags": list(p.tags)}
        for p in _profiles(agents, lambda i: ("jetson",) if i % 2 == 0 else ("pi",))
    ]
    devices.append({"name": "gone", "address": dead.address, "tags": ["jetson", "arm64"]})
    fleet_file = tmp_path / "lab.yaml"
    fleet_file.write_text(yaml.safe_dump({"name": "lab", "devices": devices}))

    def check(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "toolkit.cli.main",
                "devices",
                "check",
                "--fleet",
                str(fleet_file),
                "--max-parallel",
                "2",
                "--device-timeout",
                "20",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    run = check("--select-tag", "jetson")
    assert run.returncode == 1, run.stderr[-2000:]  # one device is down
    lines = {line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    assert set(lines) == {"dev-0", "dev-2", "dev-4", "gone"}  # the pi devices were not asked
    assert all(" ok " in lines[name] for name in ("dev-0", "dev-2", "dev-4"))
    assert "DOWN" in lines["gone"] and "no agent answered" in lines["gone"]
    assert "gone: FAIL DOWN" in run.stderr
    assert "3 done, 1 failed, 0 remaining of 4" in run.stderr

    both = check("--select-tag", "jetson", "--select-tag", "arm64")
    assert both.returncode == 1 and [ln.split()[0] for ln in both.stdout.splitlines()[1:]] == [
        "gone"
    ]
    none = check("--select-tag", "tpu")
    assert none.returncode == 2
    assert "no device has tag(s) tpu" in none.stderr and "jetson, pi" in none.stderr


def test_fleet_select_keeps_devices_with_every_tag_and_rejects_an_unknown_one():
    fleet = Fleet(
        "f",
        tuple(
            DeviceProfile(name=f"d{i}", address=f"h:{i + 1}", tags=tags)
            for i, tags in enumerate([("a",), ("a", "b"), ("b",)])
        ),
    )
    assert [d.name for d in fleet.select(["a"]).devices] == ["d0", "d1"]
    assert [d.name for d in fleet.select(["a", "b"]).devices] == ["d1"]
    assert fleet.select([]) is fleet
    with pytest.raises(ConfigError, match="no device has tag.s. c; the tags there are: a, b"):
        fleet.select(["c"])


def test_run_bounded_reports_a_raising_job_as_that_items_failure_in_order():
    def job(n: int) -> int:
        if n == 2:
            raise OSError("disk on fire\nsecond line")
        return n * 10

    outcomes = run_bounded([1, 2, 3], job, max_parallel=1)
    assert [o.value for o in outcomes] == [10, None, 30]
    assert outcomes[1].error == "OSError: disk on fire" and not outcomes[1].timed_out
    with pytest.raises(ValueError, match="max_parallel"):
        run_bounded([1], job, max_parallel=0)
