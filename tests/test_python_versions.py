"""The agent runs on the Pythons devices ship: 3.10 (JetPack 6, Ubuntu 22.04; requires-python's
floor) and the newest CPython on this machine, from the built wheel, profiled from this host.

For each interpreter a virtual environment gets the wheel (not the checkout) with the agent's
core dependencies and one runtime (LiteRT, else ONNX Runtime where LiteRT has no wheel for
it), pinned by the lock where the interpreter has wheels for the pinned versions. The agent
runs under it as `python -m device_agent serve`; this process (the host, its own Python)
pushes a model and benchmarks it through a real `DeviceClient`. A Python that is not on this
machine, or that the package index has no wheels for, is skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.wheel_venv import Venv, interpreters, make_venv, project_wheel, python_version
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.local import local_agent

pytestmark = pytest.mark.slow

FOUND = interpreters()
FLOOR = (3, 10)  # pyproject.toml's requires-python
NEWEST = max((v for v in FOUND if v > FLOOR), default=None)
# (pip requirement, the agent's runtime name, the model file it runs), in order of preference
RUNTIMES = (("ai-edge-litert", "tflite", "tiny.tflite"), ("onnxruntime", "onnx", "tiny.onnx"))
QUICK = BenchmarkOptions(
    warmup_runs=2, warmup_min_seconds=0.01, min_runs=15, min_seconds=0.2, power_sensor="none"
)


def _label(version) -> str:
    return f"python{version[0]}.{version[1]}" if version else "newest"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("python-versions-models")


def _model(folder: Path, filename: str) -> Path:
    """The tests' small CNN as the runtime's format (built on first use)."""
    from tests.model_files import build_onnx, build_tflite, tiny_cnn

    path = folder / filename
    if not path.is_file():
        build = build_tflite if path.suffix == ".tflite" else build_onnx
        build(tiny_cnn(), path)
    return path


def _agent_venv(python: Path, label: str, tmp_path_factory) -> tuple[Venv, str, str]:
    """A venv of `python` with the wheel and the first runtime that installs; cached per
    session. Skips with pip's reasons when no runtime installs."""
    wheel = project_wheel(tmp_path_factory)
    base = tmp_path_factory.getbasetemp()
    why = []
    for requirement, runtime, model in RUNTIMES:
        root = base / f"venv-{label}-{runtime}"
        if (root / "READY").is_file():
            return Venv(root, (root / "READY").read_text() == "locked"), runtime, model
        try:
            venv = make_venv(python, root, [str(wheel), requirement])
        except RuntimeError as exc:
            why.append(str(exc))
            continue
        (root / "READY").write_text("locked" if venv.locked else "unlocked")
        return venv, runtime, model
    pytest.skip(f"{python}: neither runtime installs: " + " | ".join(why))


@pytest.mark.parametrize("version", [FLOOR, NEWEST], ids=[_label(FLOOR), _label(NEWEST)])
def test_the_agent_runs_under_the_python_a_device_ships_and_is_profiled_from_the_host(
    version, tmp_path_factory, tmp_path, model_folder, monkeypatch
):
    if version is None:
        pytest.skip(f"no CPython newer than {_label(FLOOR)} on this machine (pyenv builds, "
                    "python3.X on PATH)")
    if version not in FOUND:
        pytest.skip(f"no {_label(version)} on this machine (pyenv builds, python3.X on PATH)")
    python = FOUND[version]
    venv, runtime, model = _agent_venv(python, _label(version), tmp_path_factory)
    # Outside the checkout, so `python -m device_agent` imports the wheel's copy in the venv.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    where = venv.run("python", "-c", "import device_agent; print(device_agent.__file__)",
                     cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv.root), f"the agent imported {where}, not the wheel"

    with local_agent(cache_dir=tmp_path / "cache", python=str(venv.python)) as client:
        info = client.info()
        measurement = client.benchmark(_model(model_folder, model), QUICK)

    assert info.python_version == ".".join(map(str, python_version(python)))
    assert any(r.name == runtime and r.available for r in info.runtimes), info.runtimes
    assert measurement.ok, measurement.error_message
    assert measurement.runtime == runtime
    assert measurement.latency.n >= QUICK.min_runs and measurement.latency.p50_ms > 0
    print(f"{python}: Python {info.python_version}, {runtime} {measurement.runtime_version}, "
          f"p50 {measurement.latency.p50_ms:.3f} ms, dependencies "
          f"{'from the lock' if venv.locked else 'unpinned (the lock has no wheels for it)'}")


@pytest.mark.parametrize("version", [FLOOR, NEWEST], ids=[_label(FLOOR), _label(NEWEST)])
def test_the_hosts_code_compiles_and_its_text_enums_work_under_the_python(
    version, tmp_path_factory, tmp_path
):
    """Every module of the wheel compiles under the interpreter, and ErrorKind and Verdict
    (`enum.StrEnum` is 3.11+; they stand on toolkit.enums) work there. The host's heavy
    dependencies (torch...) are not in this venv, so this is not the whole host running."""
    if version is None or version not in FOUND:
        pytest.skip(f"no {_label(version)} on this machine (pyenv builds, python3.X on PATH)")
    venv, _, _ = _agent_venv(FOUND[version], _label(version), tmp_path_factory)
    packages = venv.run("python", "-c", "import toolkit, device_agent, os; print(*(os.path."
                        "dirname(m.__file__) for m in (toolkit, device_agent)))",
                        cwd=tmp_path).stdout.split()
    venv.run("python", "-m", "compileall", "-q", *packages, cwd=tmp_path)
    out = venv.run("python", "-c", "from toolkit.errors import ErrorKind; "
                   "from toolkit.stats.ab import Verdict; k = ErrorKind.UNSAFE_MODEL; "
                   "print(k, f'{Verdict.FASTER}', ErrorKind.from_proto(k.number) is k)",
                   cwd=tmp_path).stdout.split()
    assert out == ["UNSAFE_MODEL", "faster", "True"]
