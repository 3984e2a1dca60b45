"""The power path end to end: a real agent started with `--power-command`, reading the `command`
sensor, whose meter the test controls: `meter.sh`, a script the test writes that prints the
watts held in a file (the `command` sensor's real protocol; it stands in for an external
meter's reader, which this machine does not have).

The test writes the idle figure before the benchmark and the load figure once the agent
reports the timed phase, so the idle baseline reads only the one and the timed window mostly
the other; the agent's energy arithmetic is then checked against the figures it reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.sensors.registry import AUTO_ORDER
from tests.faults.agent_helpers import EventReader, insecure_stub, onnx_model, push, sha
from toolkit.transport.local import AgentProcess

IDLE_W, LOAD_W = 2.0, 7.0


@pytest.fixture(scope="module")
def meter(tmp_path_factory) -> Path:
    """The file the power command prints (watts)."""
    folder = tmp_path_factory.mktemp("meter")
    watts = folder / "watts"
    watts.write_text(f"{IDLE_W}\n")
    return watts


def meter_command(meter: Path) -> str:
    """The power command: `meter.sh` beside the watts file, printing them."""
    script = meter.parent / "meter.sh"
    if not script.exists():
        script.write_text(f"#!/bin/sh\nexec cat '{meter}'\n")
        script.chmod(0o755)
    return str(script)


@pytest.fixture(scope="module")
def metered_agent(tmp_path_factory, meter):
    """A real agent whose `command` sensor runs `meter.sh`, a model pushed to it."""
    agent = AgentProcess(
        tmp_path_factory.mktemp("cache"), extra_args=("--power-command", meter_command(meter))
    )
    channel, stub = insecure_stub(agent)
    model = onnx_model(256)
    push(stub, model)
    try:
        yield stub, sha(model)
    finally:
        channel.close()
        agent.stop()


def _options(**more) -> pb.BenchmarkOptions:
    fields = dict(
        warmup_runs=2,
        warmup_min_seconds=0.05,
        min_runs=10,
        min_seconds=1.5,
        idle_seconds=0.6,
        timeout_seconds=120,
    )
    fields.update(more)
    return pb.BenchmarkOptions(**fields)


def _run_switching_meter(stub, model_sha: str, meter: Path, options) -> pb.BenchmarkResult:
    """Idle figure until the agent reports the timed phase, then the load figure."""
    meter.write_text(f"{IDLE_W}\n")
    reader = EventReader(stub, pb.BenchmarkRequest(sha256=model_sha, options=options))
    phases = []
    try:
        while True:
            _, event = reader.next(timeout=60)
            assert event is not None, f"stream ended without a result: {reader.error}"
            if event.WhichOneof("event") == "result":
                return event.result
            phases.append(event.progress.phase)
            if event.progress.phase == "timed" and meter.read_text().strip() != str(LOAD_W):
                meter.write_text(f"{LOAD_W}\n")
    finally:
        meter.write_text(f"{IDLE_W}\n")


def test_the_agent_lists_the_command_sensor_that_runs_its_power_command(metered_agent, meter):
    stub, _ = metered_agent
    sensors = {s.name: s for s in stub.GetInfo(pb.GetInfoRequest(), timeout=30).sensors}
    command = sensors["command"]
    assert command.available, command.reason
    assert command.detail == f"command: {meter_command(meter)}" and command.rate_hz == 5.0


def test_the_command_sensors_figures_are_what_the_meter_printed(metered_agent, meter):
    """Two runs at two steady meter readings: each run's idle and timed figures are that
    run's reading, under the sensor's name (nothing cached, nothing invented)."""
    stub, model_sha = metered_agent
    try:
        for watts in (3.25, 4.5):
            meter.write_text(f"{watts}\n")
            options = _options(power_sensor="command", min_seconds=0.3, idle_seconds=0.3)
            result = EventReader(stub, pb.BenchmarkRequest(sha256=model_sha,
                                                           options=options)).result()
            assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
            assert result.HasField("power"), result.warnings
            power = result.power
            assert (power.sensor, power.method, power.rate_hz) == ("command", "samples", 5.0)
            assert power.samples >= 1
            assert power.idle_w == pytest.approx(watts) and power.mean_w == pytest.approx(watts)
            assert power.energy_per_inference_mj == pytest.approx(0.0, abs=1e-9)
    finally:
        meter.write_text(f"{IDLE_W}\n")


def test_energy_per_inference_is_power_above_idle_over_the_timed_window_per_run(
    metered_agent, meter
):
    stub, model_sha = metered_agent
    result = _run_switching_meter(stub, model_sha, meter, _options(power_sensor="command"))
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert result.HasField("power"), result.warnings
    power = result.power
    assert power.sensor == "command" and power.method == "samples"
    assert power.rate_hz == 5.0 and power.samples >= 3
    # the baseline was sampled before the timed phase began: only the idle figure
    assert power.idle_w == pytest.approx(IDLE_W)
    # the timed window read the load figure after its first sample or two
    assert IDLE_W < power.mean_w <= LOAD_W
    assert power.mean_w > (IDLE_W + LOAD_W) / 2
    n, window_s = result.latency.n, result.timed_window_s
    expected_mj = (power.mean_w - power.idle_w) * window_s * 1000.0 / n
    assert power.energy_per_inference_mj == pytest.approx(expected_mj, rel=1e-9)
    # not the mean invoke time: the loop between runs is part of each inference's cost
    per_run_ms = window_s * 1000.0 / n
    assert per_run_ms > result.latency.mean_ms
    assert power.energy_per_inference_mj > (power.mean_w - power.idle_w) * result.latency.mean_ms


def test_the_automatic_choice_for_a_cpu_run_is_a_cpu_or_board_sensor(metered_agent, meter):
    stub, model_sha = metered_agent
    result = _run_switching_meter(stub, model_sha, meter, _options(min_seconds=0.4))
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert result.accelerator == "cpu"
    # a command meter is configured, so some sensor is available for a CPU run
    assert result.HasField("power"), result.warnings
    assert result.power.sensor in AUTO_ORDER["cpu"] and result.power.sensor != "nvml"


def test_no_power_figure_when_no_sensor_is_asked_for_although_one_is_available(metered_agent):
    stub, model_sha = metered_agent
    reader = EventReader(
        stub, pb.BenchmarkRequest(sha256=model_sha, options=_options(power_sensor="none"))
    )
    result = reader.result()
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert not result.HasField("power")
    assert not any("power" in w for w in result.warnings)


def test_a_named_meter_that_cannot_be_read_is_a_bad_request_without_power(metered_agent, meter):
    stub, model_sha = metered_agent
    meter.write_text("not a number\n")
    try:
        reader = EventReader(
            stub,
            pb.BenchmarkRequest(
                sha256=model_sha, options=_options(power_sensor="command", min_seconds=0.2)
            ),
        )
        result = reader.result()
    finally:
        meter.write_text(f"{IDLE_W}\n")
    # a sensor asked for by name that cannot be read is refused before any work
    assert result.error_kind == pb.ERROR_KIND_BAD_REQUEST
    assert "command" in result.error_message
    assert not result.HasField("power")
