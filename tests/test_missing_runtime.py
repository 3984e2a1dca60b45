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


def test_a_torch_cuda_probe_that_crashes_is_said_in_the_agent_log_and_torch_is_cpu_only(
    tmp_path,
):
    """Guards the agent's one-off CUDA probe: a probe child that dies (here a `torch` that
    kills itself with SIGSEGV at import, shadowing the real one on the agent's path) is named
    with its exit code on the agent's stderr instead of passing silently for a CPU-only host."""
    from toolkit.transport.grpc_client import DeviceClient
    from toolkit.transport.local import AgentProcess

    shadow = tmp_path / "shadow" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])
    agent = AgentProcess(tmp_path / "cache", env={"PYTHONPATH": path})
    try:
        with DeviceClient(agent.address) as client:
            torch = client.info().runtime("torch")
        assert torch is not None and torch.accelerators == ("cpu",), torch
    finally:
        agent.proc.terminate()
        agent.proc.wait(timeout=30)
        log = agent.proc.stderr.read()
        agent.stop()
    assert "torch CUDA probe exited with code -11" in log, log
