"""Benchmark options are refused by the host before it pushes anything, naming the field and
the allowed range (the ranges are the agent's own, `device_agent.measure.options.RANGES`).

Real agent (`agent` fixture: a process on loopback) and the real `edgeloop` command.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from device_agent.measure.options import RANGES
from toolkit.errors import ConfigError
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.model_file import file_sha256

BAD = [
    ("timeout_seconds", math.nan),
    ("timeout_seconds", -1.0),
    ("min_seconds", math.inf),
    ("warmup_min_seconds", -0.5),
    ("idle_seconds", math.nan),
    ("min_runs", -3),
    ("warmup_runs", -1),
    ("threads", -2),
    ("keep_samples", 4_000_000),
]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_unusable_options_are_refused_naming_the_field_and_its_range(field, value):
    """Guards: BenchmarkOptions validates on construction against the agent's ranges
    (NaN/inf pass every `< 0` check, so the finiteness check is what is tested)."""
    with pytest.raises(ConfigError) as caught:
        BenchmarkOptions(**{field: value})
    high = RANGES[field][1]
    message = str(caught.value)
    assert f"options.{field}" in message and f"{high:.0f}" in message, message
    assert isinstance(caught.value, ValueError) and "\n" not in message


def test_the_client_refuses_bad_options_before_it_pushes_the_model(agent, model_files):
    """Guards: DeviceClient.benchmark validates before `_resolve` pushes: an invalid options
    object (built around the constructor's check) leaves the agent without the model."""
    sha = file_sha256(model_files.onnx)
    agent.delete_model(sha)
    options = BenchmarkOptions(runtime="onnx")
    object.__setattr__(options, "timeout_seconds", math.nan)  # as a stale/unpickled object
    with pytest.raises(ConfigError, match="options.timeout_seconds"):
        agent.benchmark(model_files.onnx, options)
    assert not agent.has_model(sha), "the model was pushed before the options were checked"
    fine = agent.benchmark(model_files.onnx, BenchmarkOptions(runtime="onnx", min_runs=3,
                                                               min_seconds=0.05))
    assert fine.ok and agent.has_model(sha)


@pytest.mark.parametrize(("flag", "value", "field"), [
    ("--timeout", "nan", "timeout_seconds"),
    ("--min-seconds", "inf", "min_seconds"),
    ("--runs", "-5", "min_runs"),
    ("--threads", "-1", "threads"),
])
def test_the_cli_refuses_bad_options_in_one_line_before_starting_anything(
        model_files, tmp_path, flag, value, field):
    """Guards: `edgeloop profile` fails with exit 1 and one line naming the field, and the
    local agent never received the model (its cache under EDGELOOP_HOME holds no copy)."""
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", "profile", str(model_files.onnx),
         flag, value],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "EDGELOOP_HOME": str(home)},
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"options.{field}" in lines[0]
    sha = file_sha256(model_files.onnx)
    assert not [p for p in home.rglob("*") if sha in p.name], "the model reached the agent"
