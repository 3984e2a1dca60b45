"""Fleets, health checks and the validation gate against REAL agents.

Four agents on loopback ports and, where `ip netns` works (root), two more in network
namespaces with their own addresses (TLS, since they listen beyond loopback), one of them
behind a shaped link (netem delay+loss where the kernel has it, else a tbf rate limit).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.fixtures_netns import NetnsLab, SpawnedAgent, netns_skip_reason
from tests.fixtures_tls import self_signed_cert
from tests.model_files import INPUT_SHAPE, build_tflite, tiny_cnn
from toolkit.devices.fleet import Fleet, load_fleet
from toolkit.devices.health import check_fleet
from toolkit.devices.profile import Budgets, DeviceProfile, TlsConfig
from toolkit.errors import ConfigError
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.local import AgentProcess
from toolkit.validate import GateConfig, run_gate, write_html, write_json, write_junit

# Light benchmark settings: the agents share this machine's CPU cores.
QUICK = BenchmarkOptions(warmup_runs=2, min_runs=20, min_seconds=0.05)
BUDGETS = Budgets(latency_p90_ms=100.0, memory_mb=500.0, size_kb=1024.0)
FLEET_TOKEN_ENV = "EDGELOOP_TEST_FLEET_TOKEN"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> tuple[Path, Path]:
    """A real fp32 .tflite of a small CNN and a reference .npz of torch's outputs."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("gate-model")
    model = tiny_cnn()
    path = build_tflite(model, folder / "tiny.tflite")
    inputs = np.random.default_rng(0).standard_normal((32, *INPUT_SHAPE[1:])).astype(np.float32)
    with torch.no_grad():
        outputs = model(torch.from_numpy(inputs)).numpy()
    np.savez(folder / "reference.npz", inputs=inputs, outputs=outputs)
    return path, folder / "reference.npz"


@pytest.fixture(scope="module")
def loopback_agents(tmp_path_factory):
    agents = []
    try:
        for i in range(4):
            agents.append(AgentProcess(tmp_path_factory.mktemp(f"cache{i}")))
        yield agents
    finally:
        for agent in agents:
            agent.stop()


@pytest.fixture(scope="module")
def netns_devices(tmp_path_factory):
    """Profiles of agents in two namespaces (one on a shaped link), or [] with the reason."""
    reason = netns_skip_reason()
    if reason:
        yield [], reason
        return
    lab, agents = NetnsLab(), []
    try:
        hosts = [lab.add(), lab.add(shape=True)]
        folder = tmp_path_factory.mktemp("netns")
        cert, key = self_signed_cert(folder, [h.address for h in hosts])
        # Beyond loopback the agent needs TLS and client authentication: a token here.
        os.environ[FLEET_TOKEN_ENV] = secrets.token_hex(16)
        profiles = []
        for i, host in enumerate(hosts):
            tls_args = ("--tls-cert", str(cert), "--tls-key", str(key))
            agent = SpawnedAgent(["ip", "netns", "exec", host.netns], host.address,
                                 folder / f"cache{i}", tls_args,
                                 env={"EDGELOOP_AGENT_TOKEN": os.environ[FLEET_TOKEN_ENV]})
            agents.append(agent)
            profiles.append(DeviceProfile(
                name=f"netns-{i}", address=agent.address,
                tls=TlsConfig(ca_file=str(cert), token_env=FLEET_TOKEN_ENV),
                budgets=BUDGETS, tags=(host.shaping or "plain",)))
        yield profiles, hosts[1].shaping or "link shaping unavailable"
    finally:
        for agent in agents:
            agent.stop()
        lab.close()
        os.environ.pop(FLEET_TOKEN_ENV, None)


def _loopback_profiles(agents, budgets: Budgets = BUDGETS) -> list[DeviceProfile]:
    return [DeviceProfile(name=f"loop-{i}", address=a.address, budgets=budgets)
            for i, a in enumerate(agents)]


def test_validate_passes_on_every_device_and_writes_one_junit_case_per_device_and_check(
        artifact, loopback_agents, netns_devices, tmp_path):
    tflite, reference = artifact
    ns_profiles, shaping = netns_devices
    fleet = Fleet("real", tuple(_loopback_profiles(loopback_agents) + ns_profiles))
    report = run_gate(tflite, fleet, GateConfig(reference_outputs=reference, options=QUICK))

    assert report.passed, [c for c in report.checks if not c.passed]
    assert [d.device for d in report.devices] == [p.name for p in fleet.devices]
    expected = ["connect", "push", "benchmark", "budget.latency_p90_ms", "budget.memory_mb",
                "budget.size_kb", "parity"]
    for device in report.devices:
        assert [c.check for c in device.checks] == expected
        assert device.measurement is not None and device.measurement.ok
        assert device.measurement.latency.n >= QUICK.min_runs
    if ns_profiles:  # devices with their own addresses, one on a shaped link
        assert {d.address.rsplit(":", 1)[0] for d in report.devices[-2:]} != {"127.0.0.1"}
        print(f"netns devices validated; shaped link: {shaping}")

    junit = ET.parse(write_junit(report, tmp_path / "junit.xml")).getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) == len(fleet.devices) * len(expected)
    assert {c.get("name") for c in cases} == {f"{p.name}.{check}" for p in fleet.devices
                                              for check in expected}
    assert junit.get("failures") == "0" and not junit.findall(".//failure")
    data = json.loads(write_json(report, tmp_path / "report.json").read_text())
    assert data["passed"] is True and len(data["devices"]) == len(fleet.devices)
    assert data["devices"][0]["measurement"]["latency"]["samples_ms"]
    page = write_html(report, tmp_path / "report.html").read_text()
    assert all(p.name in page for p in fleet.devices)


def test_a_stopped_agent_fails_its_device_with_the_reason_while_the_others_report(
        artifact, loopback_agents, tmp_path):
    tflite, reference = artifact
    victim = AgentProcess(tmp_path / "victim-cache")
    profiles = _loopback_profiles(loopback_agents[:3])
    profiles.append(DeviceProfile(name="victim", address=victim.address, budgets=BUDGETS))
    victim.stop()
    report = run_gate(tflite, Fleet("with-a-dead-one", tuple(profiles)),
                      GateConfig(reference_outputs=reference, options=QUICK))

    assert not report.passed
    by_name = {d.device: d for d in report.devices}
    assert all(by_name[p.name].passed for p in profiles[:3])
    dead = by_name["victim"]
    assert len(dead.checks) == len(by_name["loop-0"].checks)  # failed, never skipped
    assert all(not c.passed for c in dead.checks)
    reason = dead.checks[0].message
    assert "no agent answered" in reason and victim.address in reason
    assert all(c.message == "not run: connect failed" for c in dead.checks[1:])
    junit = ET.parse(write_junit(report, tmp_path / "junit.xml")).getroot()
    failed = {c.get("name") for c in junit.findall(".//testcase") if c.find("failure") is not None}
    assert failed == {f"victim.{c.check}" for c in dead.checks}


def test_budgets_say_what_failed_and_by_how_much(artifact, loopback_agents):
    tflite, _ = artifact
    tight = Budgets(latency_p90_ms=1e-6, memory_mb=1e-3, energy_mj=1.0, size_kb=1.0)
    profile = _loopback_profiles(loopback_agents[:1], tight)[0]
    report = run_gate(tflite, Fleet("tight", (profile,)), GateConfig(options=QUICK))
    checks = {c.check: c for c in report.devices[0].checks}

    assert checks["benchmark"].passed
    m = report.devices[0].measurement
    latency = checks["budget.latency_p90_ms"]
    assert not latency.passed and latency.measured == m.latency.p90_ms
    assert "over by" in latency.message and latency.margin > 0
    memory = checks["budget.memory_mb"]
    assert not memory.passed and memory.measured == m.memory.peak_rss_mb
    size = checks["budget.size_kb"]
    assert not size.passed and size.measured == pytest.approx(tflite.stat().st_size / 1024)
    energy = checks["budget.energy_mj"]
    assert not energy.passed
    if m.power is None:  # no sensor on this machine: nothing is invented
        assert energy.measured is None and "no power sensor" in energy.message


def test_parity_fails_when_the_reference_disagrees(artifact, loopback_agents, tmp_path):
    tflite, reference = artifact
    with np.load(reference) as data:
        np.savez(tmp_path / "wrong.npz", inputs=data["inputs"], outputs=data["outputs"] + 0.5)
    profile = _loopback_profiles(loopback_agents[:1])[0]
    report = run_gate(tflite, Fleet("one", (profile,)),
                      GateConfig(reference_outputs=tmp_path / "wrong.npz", options=QUICK))
    parity = {c.check: c for c in report.devices[0].checks}["parity"]
    assert not parity.passed and parity.measured == pytest.approx(0.5, abs=1e-3)
    assert "max abs diff" in parity.message and "(fp32)" in parity.message


def test_health_check_reports_every_device_and_names_the_unreachable_one(loopback_agents,
                                                                         tmp_path):
    profiles = _loopback_profiles(loopback_agents)
    dead = AgentProcess(tmp_path / "dead-cache")
    profiles.append(DeviceProfile(name="gone", address=dead.address))
    dead.stop()
    results = check_fleet(Fleet("health", tuple(profiles)))

    assert [r.device for r in results] == [p.name for p in profiles]
    for r in results[:-1]:
        assert r.reachable and r.protocol_version == 1 and r.disk_free_mb > 0
        assert any(name.startswith("tflite") for name in r.runtimes)
    assert not results[-1].reachable and "no agent answered" in results[-1].error

    from click.testing import CliRunner

    from toolkit.cli.fleet import check_cmd

    args = [a for p in profiles for a in ("--device", p.address)]
    outcome = CliRunner().invoke(check_cmd, [*args, "--json"])
    assert outcome.exit_code == 1  # one device is down
    records = json.loads(outcome.output)
    assert [r["reachable"] for r in records] == [True] * len(loopback_agents) + [False]


def test_fleet_yaml_loads_inline_and_named_profiles_and_rejects_mistakes(tmp_path):
    (tmp_path / "box.yaml").write_text(yaml.safe_dump({"name": "box", "address": "10.0.0.9:50051"}))
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump({"name": "f", "devices": [
        "box", {"name": "inline", "address": "127.0.0.1:1", "budgets": {"latency_p90_ms": 5}}]}))
    fleet = load_fleet(str(fleet_file))
    assert [d.name for d in fleet.devices] == ["box", "inline"]
    assert fleet.devices[1].budgets.latency_p90_ms == 5.0

    fleet_file.write_text(yaml.safe_dump({"name": "f", "devices": ["box", "box"]}))
    with pytest.raises(ConfigError, match="'box' appears twice"):
        load_fleet(str(fleet_file))
    fleet_file.write_text(yaml.safe_dump({"name": "f", "devics": []}))
    with pytest.raises(ConfigError, match="devics: unknown field"):
        load_fleet(str(fleet_file))
    fleet_file.write_text(yaml.safe_dump({"name": "f", "devices": [{"name": "x", "budgets": {
        "latency_p90_ms": -1}, "address": "h:1"}]}))
    with pytest.raises(ConfigError, match=r"devices\[0\].*latency_p90_ms: expected a positive"):
        load_fleet(str(fleet_file))


def test_bundled_example_fleets_load():
    for name in ("lab", "local-ci", "arm-gateways"):
        assert load_fleet(name).devices


def test_cli_exit_code_is_zero_only_when_every_device_passes(artifact, loopback_agents, tmp_path):
    tflite, reference = artifact
    good = tmp_path / "good.yaml"
    devices = [{"name": f"d{i}", "address": a.address, "budgets": {"size_kb": 1024}}
               for i, a in enumerate(loopback_agents[:2])]
    good.write_text(yaml.safe_dump({"name": "good", "devices": devices}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "devices": [
        {**devices[0], "budgets": {"size_kb": 0.5}}]}))

    def run(fleet: Path, junit: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "toolkit.cli.main", "validate", str(tflite), "--fleet",
             str(fleet), "--reference", str(reference), "--runs", "20", "--min-seconds", "0.05",
             "--junit", str(junit)], capture_output=True, text=True, timeout=300)

    ok = run(good, tmp_path / "good.xml")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "PASSED" in ok.stdout and (tmp_path / "good.xml").is_file()
    failed = run(bad, tmp_path / "bad.xml")
    assert failed.returncode == 1
    assert "FAIL  budget.size_kb" in failed.stdout and "over by" in failed.stdout


@pytest.mark.slow
def test_on_device_accuracy_of_the_digits_model_meets_the_reference_floor(loopback_agents,
                                                                          tmp_path):
    from toolkit.export import export_tflite
    from toolkit.models import load_model

    torch.set_num_threads(1)
    loaded = load_model("digits-cnn")
    tflite = export_tflite(loaded.module, loaded.input_shape, tmp_path / "digits.tflite")
    fleet = Fleet("acc", tuple(_loopback_profiles(loopback_agents[:2])))
    config = GateConfig(reference_model="digits-cnn", data="digits", options=QUICK)
    with pytest.raises(ConfigError, match="--data needs"):
        GateConfig(data="digits")
    report = run_gate(tflite, fleet, config)

    assert report.passed, [c.message for c in report.checks if not c.passed]
    for device in report.devices:
        accuracy = {c.check: c for c in device.checks}["accuracy"]
        assert accuracy.measured >= accuracy.limit > 80.0
        assert "reference" in accuracy.message
