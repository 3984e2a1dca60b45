"""The gate's regression check (`validate --baseline DEPLOYED --max-regression 5%`) with two
real models on a real local agent: the same A/B statistics as `edgeloop compare`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.ab_models import build_pair, edgeloop
from toolkit.devices.fleet import Fleet
from toolkit.devices.profile import DeviceProfile
from toolkit.errors import ModelFileError
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.local import AgentProcess
from toolkit.validate import GateConfig, run_gate

QUICK = BenchmarkOptions(warmup_runs=2, min_seconds=0.1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return build_pair(tmp_path_factory.mktemp("gate-ab-models"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    agent = AgentProcess(tmp_path_factory.mktemp("gate-ab-cache"))
    try:
        yield Fleet("one", (DeviceProfile(name="loop", address=agent.address),))
    finally:
        agent.stop()


def test_a_candidate_slower_than_the_baseline_fails_and_says_by_how_much(pair, tmp_path):
    tiny, wide = pair
    home, out = tmp_path / "home", tmp_path / "out"
    try:
        done = edgeloop("validate", str(wide), "--device", "local", "--baseline", str(tiny),
                        "--max-regression", "5%", "--baseline-rounds", "3",
                        "--min-seconds", "0.1", "--json", str(out / "gate.json"),
                        "--junit", str(out / "gate.xml"), "--html", str(out / "gate.html"),
                        home=home, check=False)
    finally:
        edgeloop("agent", "stop", home=home, check=False)
    assert done.returncode == 1, done.stderr
    assert "FAIL  regression" in done.stdout and "slower than the baseline by" in done.stdout
    report = json.loads((out / "gate.json").read_text())
    (check,) = [c for c in report["devices"][0]["checks"] if c["check"] == "regression"]
    assert not check["passed"] and check["limit"] == 5.0 and check["unit"] == "%"
    assert check["measured"] > 100  # the wide model costs many times the tiny one
    assert check["detail"]["ci_low"] > 1.05 and check["detail"]["verdict"] == "slower"
    assert report["settings"]["baseline"]["max_regression_pct"] == 5.0
    case = ET.parse(out / "gate.xml").getroot().find(".//testcase[@name='local.regression']")
    assert "slower than the baseline by" in case.find("failure").get("message")
    assert "regression" in (out / "gate.html").read_text()


@pytest.mark.parametrize("candidate,baseline", [("tiny", "tiny"), ("tiny", "wide")])
def test_a_candidate_not_slower_than_the_baseline_passes(pair, fleet, candidate, baseline):
    files = dict(zip(("tiny", "wide"), pair))
    config = GateConfig(options=QUICK, baseline=files[baseline], baseline_rounds=3,
                        store=False)
    report = run_gate(files[candidate], fleet, config)
    (device,) = report.devices
    assert [c.check for c in device.checks][-1] == "regression"
    check = device.checks[-1]
    assert report.passed, check.message
    assert check.detail["ci_low"] <= 1.05  # not shown to regress more than 5%
    if baseline == "wide":  # the candidate is much faster than what is deployed
        assert check.detail["verdict"] == "faster" and check.measured < -50


def test_bad_regression_settings_are_refused_before_any_device(pair, tmp_path):
    tiny, wide = pair
    done = edgeloop("validate", str(wide), "--device", "local", "--baseline", str(tiny),
                    "--max-regression", "lots", home=tmp_path / "home", check=False)
    assert done.returncode == 2 and "expected a percentage" in done.stderr
    with pytest.raises(ModelFileError, match="--baseline .*no such model file"):
        run_gate(wide, Fleet("none", (DeviceProfile(name="x", address="127.0.0.1:9"),)),
                 GateConfig(baseline=tmp_path / "missing.tflite"))
