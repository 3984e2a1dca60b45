"""The `edgeloop` command line as a user runs it: profile, results, devices info, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def edgeloop(*args: str, home, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGELOOP_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture()
def home(tmp_path):
    return tmp_path / "home"


def test_profile_on_the_local_device_stores_a_row_that_results_reads_back(model_files, home):
    done = edgeloop(
        "profile",
        str(model_files.tflite),
        "--runs",
        "10",
        "--min-seconds",
        "0.1",
        "--json",
        home=home,
    )
    record = json.loads(done.stdout)
    assert record["ok"] and record["latency"]["n"] >= 10 and record["runtime"] == "tflite"
    assert record["power"] is None
    table = edgeloop(
        "profile", str(model_files.onnx), "--runs", "10", "--min-seconds", "0.1", home=home
    )
    assert "p50" in table.stdout and "peak RSS" in table.stdout
    rows = json.loads(edgeloop("results", "--format", "json", home=home).stdout)
    assert [r["runtime"] for r in rows] == ["tflite", "onnx"]
    assert rows[0]["model_sha256"] == record["model_sha256"]
    for column in (
        "device_id",
        "runtime_version",
        "threads",
        "p90_ms",
        "timestamp",
        "toolkit_version",
    ):
        assert rows[0][column] is not None
    only_onnx = json.loads(
        edgeloop("results", "--format", "json", "--model", "tiny.onnx", home=home).stdout
    )
    assert len(only_onnx) == 1
    csv = edgeloop("results", "--format", "csv", home=home).stdout
    assert csv.splitlines()[0].startswith("id,run_id")


def test_devices_info_local_lists_runtimes(home):
    done = edgeloop("devices", "info", "local", "--json", home=home)
    info = json.loads(done.stdout)
    assert info["protocol_version"] >= 1
    assert "tflite" in [r["name"] for r in info["runtimes"] if r["available"]]


@pytest.mark.parametrize(
    "args,expected",
    [
        (("profile", "missing.tflite"), "missing.tflite: no such file"),
        (("profile", "pyproject.toml"), "not a model file"),
        (("profile", "{tflite}", "--device", "127.0.0.1:9"), "no agent answered at 127.0.0.1:9"),
        (("profile", "{tflite}", "--runtime", "onnx"), "UNKNOWN_RUNTIME"),
        (("devices", "info", "no-such-board"), "device profile 'no-such-board' not found"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(model_files, home, args, expected):
    args = tuple(a.format(tflite=model_files.tflite) for a in args)
    done = edgeloop(*args, home=home, check=False)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_cpu_affinity_and_cooldown_flags_reach_the_agent_and_come_back_in_the_result(
        model_files, tmp_path):
    """`--cpu-affinity 0 --cooldown-s 0.3`: the benchmark child ran pinned to CPU 0 and the
    agent waited before starting; both are in the stored record."""
    import json as _json

    from click.testing import CliRunner

    from toolkit.cli.main import cli

    result = CliRunner().invoke(cli, [
        "profile", str(model_files.tflite), "--cpu-affinity", "0", "--cooldown-s", "0.3",
        "--runs", "5", "--min-seconds", "0.05", "--json",
    ])
    assert result.exit_code == 0, result.output
    record = _json.loads(result.output[result.output.index("{"):])
    assert record["affinity"] == [0], record
    assert record["options"]["cpu_affinity"] == [0]


def test_a_bad_cpu_list_is_a_one_line_usage_error(model_files):
    from click.testing import CliRunner

    from toolkit.cli.main import cli

    result = CliRunner().invoke(cli, ["profile", str(model_files.tflite), "--cpu-affinity", "x"])
    assert result.exit_code == 2
    assert "--cpu-affinity" in result.output and "Traceback" not in result.output
