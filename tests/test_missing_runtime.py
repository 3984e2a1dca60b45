"""A device without a runtime's module: GetInfo shows it absent, asking for it is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from toolkit.errors import RuntimeUnavailableError
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.local import local_agent


@pytest.fixture()
def agent_without_onnxruntime(tmp_path):
    # A package that fails to import shadows onnxruntime on this agent's path, as on a
    # device image where the module is not installed.
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])
    with local_agent(cache_dir=tmp_path / "cache", env={"PYTHONPATH": path}) as client:
        yield client


def test_missing_runtime_is_absent_in_get_info_and_a_clear_error(
    agent_without_onnxruntime, model_files
):
    client = agent_without_onnxruntime
    onnx = client.info().runtime("onnx")
    assert not onnx.available and "onnxruntime" in onnx.reason
    m = client.benchmark(model_files.onnx, BenchmarkOptions(min_runs=5, min_seconds=0.05))
    assert not m.ok and m.error_kind == "RUNTIME_UNAVAILABLE"
    assert "runtime 'onnx' is not available on this device" in m.error_message
    with pytest.raises(RuntimeUnavailableError, match="runtime 'onnx' is not available"):
        client.infer(model_files.onnx, [np.zeros((1, 1, 8, 8), dtype=np.float32)])


def test_agent_imports_neither_torch_nor_toolkit_to_serve():
    code = (
        "import sys, device_agent.server.app, device_agent.__main__;"
        "from device_agent.runtimes.registry import runtime_statuses; runtime_statuses();"
        "from device_agent.sensors.registry import sensor_infos; sensor_infos();"
        "bad = [m for m in ('torch', 'toolkit', 'click', 'pandas') if m in sys.modules];"
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
