"""Models are data: a pushed .pt2 or .onnx cannot make the agent run code or read other files.

Each crafted archive starts from a real `torch.export.save` and changes one thing that
torch 2.13's `torch.export.load` turns into code execution (see
`device_agent/runtimes/pt2_safety.py`); without the inspection each of them writes its marker
file from the benchmark child or the Infer worker (reproduced before the fix).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from toolkit.errors import AgentError
from toolkit.measurement import BenchmarkOptions

QUICK = BenchmarkOptions(
    warmup_runs=1, warmup_min_seconds=0.01, min_runs=2, min_seconds=0.01, idle_seconds=0.01,
    power_sensor="none", threads=1, timeout_seconds=120,
)  # fmt: skip


class _WritesMarker:
    """Unpickling this runs `open(path, "w")`: code, from the model file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _rewrite(src: Path, dst: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """Copies the zip `src` to `dst`, passing each member (name under the root) through edit."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            zout.writestr(info, edit(rel, zin.read(info.filename)))
    return dst


def _edit_program(change: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def edit(name: str, data: bytes) -> bytes:
        if name == "models/model.json":
            program = json.loads(data)
            change(program)
            return json.dumps(program).encode()
        return data

    return edit


def use_pickle_weight(src: Path, dst: Path, marker: Path) -> Path:
    """The issue's archive: weight 0 marked use_pickle, its payload a pickle that runs code."""

    def edit(name: str, data: bytes) -> bytes:
        if name == "data/weights/model_weights_config.json":
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        if name == "data/weights/weight_0":
            return pickle.dumps(_WritesMarker(marker), protocol=2)
        return data

    return _rewrite(src, dst, edit)


def pickled_sample_inputs(src: Path, dst: Path, marker: Path) -> Path:
    """Sample inputs as a bare pickle: torch retries a failed weights_only load without it."""
    return _rewrite(
        src,
        dst,
        lambda name, data: pickle.dumps(_WritesMarker(marker), protocol=2)
        if name.startswith("data/sample_inputs/")
        else data,
    )


def sympy_expression(src: Path, dst: Path, marker: Path) -> Path:
    """A symbolic size whose expr_str sympy evaluates as Python."""

    def change(program: dict) -> None:
        sizes = program["graph_module"]["graph"]["tensor_values"]["input"]["sizes"]
        sizes[0] = {"as_expr": {"expr_str": f"__import__('builtins').open('{marker}', 'w')"}}

    return _rewrite(src, dst, _edit_program(change))


def guards_code(src: Path, dst: Path, marker: Path) -> Path:
    """guards_code, which torch exec-s when the program becomes a module."""

    def change(program: dict) -> None:
        program["guards_code"] = [f"__import__('builtins').open('{marker}', 'w') is not None"]

    return _rewrite(src, dst, _edit_program(change))


CRAFTED = [use_pickle_weight, pickled_sample_inputs, sympy_expression, guards_code]


@pytest.fixture(scope="module")
def crafted(model_files, tmp_path_factory):
    """name -> (archive, marker) for each crafted .pt2; markers live in a folder of their own."""
    folder = tmp_path_factory.mktemp("crafted")
    out = {}
    for craft in CRAFTED:
        marker = folder / f"MARKER-{craft.__name__}"
        out[craft.__name__] = (craft(model_files.pt2, folder / f"{craft.__name__}.pt2", marker),
                               marker)
    return out


@pytest.mark.parametrize("craft", [c.__name__ for c in CRAFTED])
def test_a_pt2_that_would_run_code_is_refused_by_benchmark_as_unsafe_model(agent, crafted, craft):
    """Guards pt2_safety.check_pt2 in TorchRuntime.load: without it the marker appears (or,
    for use_pickle, the forced weights_only turns it into LOAD_FAILED, not UNSAFE_MODEL)."""
    archive, marker = crafted[craft]
    m = agent.benchmark(archive, QUICK)
    assert not m.ok and m.error_kind == "UNSAFE_MODEL", (m.error_kind, m.error_message)
    assert not marker.exists(), f"{craft}: the model ran code on the device"
    assert "models/" in m.error_message or "data/" in m.error_message  # names the member
    assert agent.health().ok


@pytest.mark.parametrize("craft", ["use_pickle_weight", "sympy_expression"])
def test_a_pt2_that_would_run_code_is_refused_by_infer(agent, crafted, craft):
    """Guards the same check in the Infer worker, mapped to FAILED_PRECONDITION 'refused'."""
    archive, marker = crafted[craft]
    with pytest.raises(AgentError, match="refused") as info:
        agent.infer(archive, [np.zeros((1, 1, 8, 8), np.float32)])
    assert "use_pickle" in str(info.value) or "expr_str" in str(info.value)
    assert not marker.exists(), f"{craft}: the model ran code in the Infer worker"


def test_the_sample_inputs_fallback_cannot_unpickle_even_without_the_inspection(
    crafted, tmp_path
):
    """Guards the forced weights_only (TORCH_FORCE_WEIGHTS_ONLY_LOAD) in load_program: with
    the inspection bypassed, torch's own fallback to weights_only=False must not run code."""
    import subprocess
    import sys

    archive, _ = crafted["pickled_sample_inputs"]
    marker = tmp_path / "MARKER"
    bypass = pickled_sample_inputs(archive, tmp_path / "bypass.pt2", marker)
    code = (
        "import sys\n"
        "import device_agent.runtimes.torch_pt2 as t\n"
        "from device_agent.runtimes.base import UnsafeModelError\n"
        "try:\n    t.check_pt2(sys.argv[1])\nexcept UnsafeModelError as e:\n"
        "    print('inspection refuses:', e)\n"
        "t.check_pt2 = lambda path: None\n"
        "try:\n    t.load_program(sys.argv[1])\nexcept Exception as e:\n"
        "    print('load refused:', type(e).__name__, str(e).splitlines()[0])\n"
        "else:\n    print('load accepted')\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(bypass)], capture_output=True,
                         text=True, timeout=300)
    said = run.stdout.splitlines()
    assert run.returncode == 0 and len(said) == 2, (run.returncode, run.stdout, run.stderr)
    # The bypass was needed (the inspection refuses this archive) and was taken: what refused
    # the load is torch's weights-only unpickler, not the inspection.
    assert said[0].startswith("inspection refuses:") and "sample_inputs" in said[0], said
    assert said[1].startswith("load refused: UnpicklingError Weights only load failed"), said
    assert not marker.exists()


def test_a_normal_pt2_still_benchmarks_and_infers(agent, model_files):
    """The inspection accepts what torch.export.save writes (fp32, static batch)."""
    m = agent.benchmark(model_files.pt2, QUICK)
    assert m.ok, m.error_message
    out = agent.infer(model_files.pt2, [np.zeros((1, 1, 8, 8), np.float32)])
    assert out[0].shape == (1, 10)


def test_an_archive_with_a_compiled_library_is_refused(agent, model_files, tmp_path):
    """AOTInductor members are shared libraries torch would dlopen: never from the wire."""
    archive = tmp_path / "aoti.pt2"
    with zipfile.ZipFile(model_files.pt2) as zin, zipfile.ZipFile(archive, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        zout.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    m = agent.benchmark(archive, QUICK)
    assert m.error_kind == "UNSAFE_MODEL" and "aotinductor" in m.error_message


def test_an_onnx_model_with_external_data_is_refused(agent, model_files, tmp_path):
    """Guards onnx_safety.check_onnx: a tensor whose data lives in another file (here the
    agent's own index, next to the models) would be read by ONNX Runtime."""
    import onnx

    model = onnx.load(str(model_files.onnx))
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location="../index.json", length=16)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    path = tmp_path / "external.onnx"
    path.write_bytes(model.SerializeToString())
    m = agent.benchmark(path, QUICK)
    assert m.error_kind == "UNSAFE_MODEL", (m.error_kind, m.error_message)
    assert "external data" in m.error_message and "index.json" in m.error_message
    with pytest.raises(AgentError, match="external data"):
        agent.infer(path, [np.zeros((1, 1, 8, 8), np.float32)])
    assert os.path.exists(model_files.onnx)
