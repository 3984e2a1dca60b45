"""Microcontrollers over a serial line: the MLPerf Tiny DUT protocol against an EMULATED DUT.

The emulator (`python -m device_agent.serial_dut.emulator`) is a real process on a real
pseudo-terminal running the model with TFLite Micro; it proves the protocol path (handshake,
chunked upload, infer, results, the DUT's own timer, faults), not a microcontroller's speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("serial", reason="pyserial is not installed (the serial extra)")
pytest.importorskip("tflite_micro", reason="tflite-micro is not installed (the emulator runs it)")

from device_agent.protocol import edgeloop_pb2 as pb  # noqa: E402
from device_agent.serial_dut import protocol as p  # noqa: E402
from device_agent.serial_dut.bench import DUT_RUNTIME, benchmark_dut  # noqa: E402
from device_agent.serial_dut.emulator import READY_PREFIX  # noqa: E402
from device_agent.serial_dut.model_io import input_bytes, tflite_io  # noqa: E402
from device_agent.serial_dut.session import DutSession, DutTimeouts  # noqa: E402

FAST = DutTimeouts(reply_s=0.5, infer_s=5.0, settle_s=0.05)
QUICK = pb.BenchmarkOptions(warmup_runs=2, warmup_min_seconds=0.01, min_runs=20, min_seconds=0.1)


@pytest.fixture(scope="module")
def dut_models(tmp_path_factory) -> dict[str, Path]:
    """The tests' small CNN as int8 and float32 .tflite (the 'firmware' of the emulated DUT)."""
    import torch

    from tests.model_files import build_tflite, build_tflite_int8, tiny_cnn

    folder = tmp_path_factory.mktemp("dut-models")
    model = tiny_cnn()
    return {
        "int8": build_tflite_int8(model, folder / "tiny_int8.tflite", torch.rand(16, 1, 8, 8)),
        "float": build_tflite(model, folder / "tiny.tflite"),
    }


@contextmanager
def emulated_dut(model: Path, *flags: str) -> Iterator[str]:
    """Starts an emulated DUT; yields its pty path; stops it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "device_agent.serial_dut.emulator", "--model", str(model), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith(READY_PREFIX), proc.stderr.read()
        yield line[len(READY_PREFIX) :].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def tflm_outputs(model: Path, arrays: list[np.ndarray]) -> np.ndarray:
    """What TFLite Micro computes for `arrays` here, dequantized like the DUT's results."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_file(str(model), arena_size=1 << 20)
    for i, a in enumerate(arrays):
        interp.set_input(a, i)
    interp.invoke()
    out = np.asarray(interp.get_output(0)).astype(np.float64).ravel()
    spec = tflite_io(str(model))[1][0]
    return (out - spec.zero_point) * spec.scale if spec.quantized else out


# -- the protocol on a real pty --------------------------------------------------------------
def test_the_handshake_names_the_emulated_dut_and_the_model_compiled_into_it(dut_models):
    with emulated_dut(dut_models["int8"]) as port, DutSession.open(port, 115200, FAST) as s:
        identity = s.identify()
    assert identity.device == "dut"
    assert identity.vendor == "edgeloop-emulator"
    assert "emulated" in identity.firmware
    assert identity.model == "tiny_int8.tflite"


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_an_input_uploaded_in_chunks_is_what_the_dut_computes_on(dut_models, kind):
    model = dut_models[kind]
    spec = tflite_io(str(model))[0][0]
    rng = np.random.default_rng(7)
    if kind == "int8":
        array = rng.integers(-128, 127, spec.shape, endpoint=True).astype(np.int8)
    else:
        array = rng.standard_normal(spec.shape).astype(np.float32)
    data = input_bytes([array])
    commands = p.db_commands(data)
    assert len(commands) == 1 + math.ceil(len(data) / p.DB_CHUNK_BYTES) > 2
    assert all(len(c) + 1 <= p.MAX_COMMAND_CHARS for c in commands)
    with emulated_dut(model) as port, DutSession.open(port, 115200, FAST) as s:
        traffic = s.load_input(data)
        report = s.infer(3, 2)
        again = s.results()
    assert traffic.bytes_out == sum(len(c) + 1 for c in commands)
    expected = tflm_outputs(model, [array])
    np.testing.assert_allclose(report.results, expected, rtol=1e-4, atol=1e-6)
    assert again == report.results
    assert (report.runs, report.warmups) == (3, 2)
    assert report.elapsed_us > 0
    assert report.per_inference_ms == pytest.approx(report.elapsed_us / 3 / 1000)


def test_the_dut_timer_wraps_at_32_bits():
    report = p.InferReport(runs=2, warmups=0, start_us=2**32 - 100, end_us=300)
    assert report.elapsed_us == 400
    assert report.per_inference_ms == pytest.approx(0.2)


def test_a_garbled_line_is_sent_again_once_and_the_run_goes_on(dut_models):
    flags = ("--garble-once", "infer")
    with emulated_dut(dut_models["int8"], *flags) as port, DutSession.open(port, 115200, FAST) as s:
        report = s.infer(1, 0)
        assert s.retries == 1
        assert report.elapsed_us > 0 and len(report.results) == 10
        s.infer(1, 0)
        assert s.retries == 1  # once only: the next reply is clean


def test_a_garbled_reply_during_the_upload_restarts_the_whole_upload(dut_models):
    data = bytes(range(64))
    with emulated_dut(dut_models["int8"], "--garble-once", "db") as port:
        with DutSession.open(port, 115200, FAST) as s:
            s.load_input(data)
            assert s.retries == 1
            assert s.infer(1, 0).elapsed_us > 0


def test_a_silent_dut_is_a_timeout_error_naming_the_port(dut_models):
    with emulated_dut(dut_models["int8"], "--silent-after", "0") as port:
        with DutSession.open(port, 115200, FAST) as s:
            start = time.monotonic()
            with pytest.raises(p.DutTimeoutError) as caught:
                s.identify()
            waited = time.monotonic() - start
    assert isinstance(caught.value, TimeoutError)
    assert port in str(caught.value) and "`name%`" in str(caught.value)
    assert "silent" in str(caught.value)
    assert FAST.reply_s <= waited < FAST.reply_s + 1.0


def test_a_device_answering_another_protocol_gets_a_clear_error(dut_models):
    with emulated_dut(dut_models["int8"], "--other-protocol") as port:
        with DutSession.open(port, 115200, FAST) as s:
            with pytest.raises(p.DutProtocolError) as caught:
                s.identify()
    assert not isinstance(caught.value, p.DutTimeoutError)
    text = str(caught.value)
    assert port in text and "'ERROR'" in text and "not an MLPerf Tiny DUT" in text


def test_a_refused_command_names_what_the_dut_said():
    reply = p.Reply("infer 0 0", ("e-[Inference iterations must be >0]",))
    with pytest.raises(p.DutRefusedError, match=r"Inference iterations must be >0"):
        p.parse_infer("/dev/ttyACM0", reply, 0, 0)


# -- one benchmark: the DUT's timer, the host's round trip, failures as results ---------------
def test_a_dut_benchmark_reports_the_dut_timer_and_the_host_round_trip_apart(dut_models):
    model = dut_models["int8"]
    with emulated_dut(model) as port, DutSession.open(port, 115200, FAST) as s:
        phases = []
        result = benchmark_dut(s, QUICK, model.read_bytes(), on_progress=lambda e: phases.append(e))
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert result.runtime == DUT_RUNTIME and "emulated" in result.runtime_version
    assert result.latency.n >= QUICK.min_runs and result.timed_window_s >= QUICK.min_seconds
    # the DUT's timer counts whole microseconds
    samples = np.asarray(result.latency.samples_ms)
    np.testing.assert_allclose(samples * 1000, np.round(samples * 1000), atol=1e-6)
    # the host's clock encloses the DUT's timed window on every command
    assert result.host_round_trip.n == result.latency.n
    assert result.host_round_trip.min_ms > result.latency.min_ms
    assert [e.phase for e in phases][:3] == ["loading", "warmup", "timed"]
    assert list(result.inputs[0].shape) == [1, 1, 8, 8] and result.inputs[0].dtype == "int8"
    assert not result.HasField("power")


def test_a_dut_that_goes_silent_mid_benchmark_is_a_device_protocol_result(dut_models):
    model = dut_models["int8"]
    short = DutTimeouts(reply_s=0.5, infer_s=0.5, settle_s=0.05)
    with emulated_dut(model, "--silent-after", "8") as port:
        with DutSession.open(port, 115200, short) as s:
            result = benchmark_dut(s, QUICK, model.read_bytes())
    assert result.error_kind == pb.ERROR_KIND_DEVICE_PROTOCOL
    assert port in result.error_message and "silent" in result.error_message
    assert not result.HasField("latency")


def test_a_dut_benchmark_past_its_timeout_is_a_timeout_result(dut_models):
    model = dut_models["int8"]
    options = pb.BenchmarkOptions(min_runs=10**6, min_seconds=60, timeout_seconds=0.5)
    with emulated_dut(model) as port, DutSession.open(port, 115200, FAST) as s:
        start = time.monotonic()
        result = benchmark_dut(s, options, model.read_bytes())
    assert result.error_kind == pb.ERROR_KIND_TIMEOUT, result.error_message
    assert "0.5 s" in result.error_message
    assert time.monotonic() - start < 3.0


# -- a gateway's agent with --serial-dut -------------------------------------------------------
def test_an_agent_lists_its_serial_duts_and_benchmarks_the_one_a_request_targets(
    dut_models, tmp_path
):
    from toolkit.errors import AgentError
    from toolkit.measurement import BenchmarkOptions
    from toolkit.transport.local import local_agent
    from toolkit.transport.serial_dut import GatewayTargetClient

    model = dut_models["int8"]
    with emulated_dut(model) as good, emulated_dut(model, "--silent-after", "0") as silent:
        args = ("--serial-dut", f"{good}:230400", "--serial-dut", silent)
        with local_agent(cache_dir=tmp_path / "cache", extra_args=args) as client:
            listed = {a.id: a for a in client.info(refresh=True).attached}
            assert set(listed) == {f"serial:{good}", f"serial:{silent}"}
            ok, mute = listed[f"serial:{good}"], listed[f"serial:{silent}"]
            assert ok.available and ok.kind == "mlperf-tiny-dut" and ok.baud == 230400
            assert (ok.name, ok.model) == ("edgeloop-emulator", "tiny_int8.tflite")
            assert not mute.available and silent in mute.reason and "silent" in mute.reason

            dut = GatewayTargetClient(client, f"serial:{good}")
            options = BenchmarkOptions(warmup_runs=2, min_runs=20, min_seconds=0.1)
            m = dut.benchmark(model, options)
            assert m.ok, m.error_message
            assert m.runtime == DUT_RUNTIME and m.device_id.endswith(f"/serial:{good}")
            assert m.latency.n >= 20
            assert m.host_round_trip_p50_ms > m.latency.p50_ms
            assert m.power is None

            with pytest.raises(AgentError, match="no attached device"):
                GatewayTargetClient(client, "serial:/dev/no-such-port")
            with pytest.raises(AgentError, match="unavailable.*silent"):
                GatewayTargetClient(client, f"serial:{silent}")
            # the agent's own benchmarks still run (the DUT path does not touch their queue)
            assert client.benchmark(model, options).ok


# -- the command line --------------------------------------------------------------------------
def edgeloop(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGELOOP_HOME": str(home)},
        timeout=300,
    )


def test_edgeloop_profile_reaches_a_dut_on_this_hosts_port_through_a_serial_profile(
    dut_models, tmp_path
):
    model = dut_models["int8"]
    with emulated_dut(model) as port:
        profile = tmp_path / "bench-board.yaml"
        profile.write_text(
            f"name: bench-board\ntransport: serial\nserial:\n  port: {port}\n  baud: 921600\n"
            "benchmark:\n  min_runs: 20\n  min_seconds: 0.1\n  warmup_runs: 2\n"
        )
        done = edgeloop("profile", str(model), "--device", str(profile), "--json", home=tmp_path)
        assert done.returncode == 0, done.stderr
        row = json.loads(done.stdout)
        assert row["runtime"] == DUT_RUNTIME and row["device_id"] == f"serial:{port}"
        assert row["latency"]["n"] >= 20 and row["power"] is None
        assert row["host_round_trip_p50_ms"] > row["latency"]["p50_ms"]

        table = edgeloop("profile", str(model), "--device", str(profile), home=tmp_path)
        assert table.returncode == 0, table.stderr
        assert "round trip" in table.stdout and "not reported by the DUT" in table.stdout

        stored = edgeloop("results", "--format", "json", home=tmp_path)
        assert stored.returncode == 0, stored.stderr
        assert stored.stdout.count(DUT_RUNTIME) >= 2


def test_edgeloop_profile_with_a_target_goes_through_the_gateways_agent(dut_models, tmp_path):
    from toolkit.transport.local import local_agent

    model = dut_models["int8"]
    with emulated_dut(model) as port:
        args = ("--serial-dut", port)
        with local_agent(cache_dir=tmp_path / "cache", extra_args=args) as client:
            done = edgeloop(
                "profile", str(model), "--device", client.address, "--target", f"serial:{port}",
                "--runs", "20", "--min-seconds", "0.1", "--json", home=tmp_path,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            row = json.loads(done.stdout)
            assert row["runtime"] == DUT_RUNTIME and row["latency"]["n"] >= 20
            assert row["host_round_trip_p50_ms"] is not None

            shown = edgeloop("devices", "info", client.address, home=tmp_path)
            assert shown.returncode == 0, shown.stderr
            assert f"serial:{port}" in shown.stdout and "edgeloop-emulator" in shown.stdout

            wrong = edgeloop(
                "profile", str(model), "--device", client.address, "--target", "serial:/dev/x",
                home=tmp_path,
            )  # fmt: skip
            assert wrong.returncode == 1
            assert "no attached device 'serial:/dev/x'" in wrong.stderr
            assert len(wrong.stderr.strip().splitlines()) == 1


def test_devices_scan_serial_lists_ports_and_which_one_a_dut_answered_on(dut_models, tmp_path):
    with emulated_dut(dut_models["int8"]) as port:
        done = edgeloop("devices", "scan", "--serial", "--port", port, "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {r["port"]: r for r in json.loads(done.stdout)}
    assert rows[port]["dut"] and rows[port]["name"] == "edgeloop-emulator"
    assert rows[port]["model"] == "tiny_int8.tflite"
    for other in set(rows) - {port}:  # the OS's own ports: listed with their VID:PID (if USB)
        assert "usb_vid_pid" in rows[other]


def test_a_serial_profile_without_its_port_is_a_config_error_naming_file_and_key(tmp_path):
    from toolkit.devices.profile import load_profile
    from toolkit.errors import ConfigError

    bad = tmp_path / "board.yaml"
    bad.write_text("name: board\ntransport: serial\n")
    with pytest.raises(ConfigError, match=r"board\.yaml: serial: expected a mapping"):
        load_profile(str(bad))
    bad.write_text("name: board\ntransport: serial\nserial:\n  port: /dev/ttyACM0\n  baud: fast\n")
    with pytest.raises(ConfigError, match=r"board\.yaml: serial: baud: expected a positive"):
        load_profile(str(bad))
    bad.write_text("name: board\ntransport: ssh\ntarget: serial:/dev/ttyACM0\nssh: {host: h}\n")
    with pytest.raises(ConfigError, match=r"board\.yaml: target: expected an attached device"):
        load_profile(str(bad))
    assert load_profile("mcu-serial").serial.port == "/dev/ttyACM0"


def test_a_port_in_use_by_one_session_is_refused_to_a_second(dut_models):
    from device_agent.serial_dut.link import SerialLinkError

    with emulated_dut(dut_models["int8"]) as port, DutSession.open(port, 115200, FAST) as s:
        with pytest.raises(SerialLinkError, match=rf"{port}: cannot open serial port"):
            DutSession.open(port, 115200, FAST)
        assert s.identify().vendor == "edgeloop-emulator"


def test_a_malformed_serial_dut_flag_stops_the_agent_with_a_usage_error():
    done = subprocess.run(
        [sys.executable, "-m", "device_agent", "serve", "--serial-dut", "/dev/ttyACM0:fast"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--serial-dut: '/dev/ttyACM0:fast': expected PORT[:BAUD]" in done.stderr
