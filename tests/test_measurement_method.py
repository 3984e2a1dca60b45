"""The measurement method on a real agent: nothing starts beside a running benchmark, the
one-shot bench starts one process, CPU pinning, the device state, cooldown and start
temperature, thermal readings around the timed window, peak RSS over the timed loop, and the
power sensor that follows the accelerator.

Stand-ins, each because the real thing cannot be controlled or is absent here:
- thermal and cpufreq: a sysfs tree the test writes in the kernel's layout
  (`EDGELOOP_SYSFS_ROOT`) for a real agent to read, so temperatures and governors can be set
  and changed mid-run on machines without thermal zones or cpufreq; one test reads the real
  sysfs and skips, saying why, where no temperature is readable;
- peak RSS: a fake runtime (`_Runtime`, `_Model`) monkeypatched into the harness, run in the
  test's process: a model that allocates 64 MB at a chosen run, or does nothing 400,000
  times, isolates the harness's own accounting; a real model (data, never code) cannot
  allocate on cue, and a real runtime's own memory would hide the 1 MB bound;
- sensor choice: each sensor's `availability` stubbed on or off, to check `pick_sensor`'s
  order for hardware combinations this machine lacks (NVML, INA3221, RAPL, a battery).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from device_agent.measure import memory
from device_agent.measure.harness import run_benchmark
from device_agent.measure.options import with_defaults
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.runtimes.base import TensorInfo
from device_agent.sensors import registry
from device_agent.sensors.base import Availability
from device_agent.sensors.thermal import TEMPERATURE_RISE_FLAG_C, read_thermal
from tests.faults.agent_helpers import EventReader, insecure_stub, onnx_model, push, sha, wait_for
from toolkit.transport.local import AgentProcess

WORKER = "device_agent.measure.worker"
ZYGOTE = "device_agent.measure.zygote"


def _options(seconds: float = 0.3, **more) -> pb.BenchmarkOptions:
    fields = dict(
        warmup_runs=1,
        warmup_min_seconds=0.01,
        min_runs=3,
        min_seconds=seconds,
        power_sensor="none",
        timeout_seconds=120,
    )
    fields.update(more)
    return pb.BenchmarkOptions(**fields)


def _below(pid: int) -> dict[int, psutil.Process]:
    """Every process below `pid` now."""
    try:
        return {c.pid: c for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return ""


def _zygotes(pid: int) -> set[int]:
    """The agent's benchmark fork server (its direct child)."""
    return {p for p, c in _below(pid).items() if ZYGOTE in _cmdline(c) and c.ppid() == pid}


def _workers(pid: int) -> set[int]:
    """Benchmark processes below `pid` now: spawned workers, and the children the zygote
    forked (they show the zygote's command line, below the zygote)."""
    found = set()
    for p, child in _below(pid).items():
        cmd = _cmdline(child)
        try:
            if WORKER in cmd or (ZYGOTE in cmd and child.ppid() != pid):
                found.add(p)
        except psutil.NoSuchProcess:
            pass
    return found


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(path.name + ".new")
    staged.write_text(text + "\n")
    os.replace(staged, path)  # atomic: the agent reading mid-write saw an empty file (0.0 °C)
    return path


@pytest.fixture(scope="module")
def model():
    return onnx_model(1024)


@pytest.fixture(scope="module")
def agent(tmp_path_factory, model):
    agent = AgentProcess(tmp_path_factory.mktemp("cache"))
    channel, stub = insecure_stub(agent)
    push(stub, model)
    try:
        yield agent, stub
    finally:
        channel.close()
        agent.stop()


@pytest.fixture(scope="module")
def fake_sysfs(tmp_path_factory) -> Path:
    """A CPU thermal zone and cpufreq files for every CPU, in the kernel's layout."""
    root = tmp_path_factory.mktemp("sysfs")
    zone = "sys/class/thermal/thermal_zone0"
    _write(root, f"{zone}/type", "x86_pkg_temp")
    _write(root, f"{zone}/temp", "40000")
    for cpu in range(os.cpu_count() or 1):
        base = f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        _write(root, f"{base}/scaling_governor", "performance")
        _write(root, f"{base}/scaling_cur_freq", "2400000")
        _write(root, f"{base}/cpuinfo_max_freq", "2400000")
    return root


@pytest.fixture(scope="module")
def sysfs_agent(tmp_path_factory, fake_sysfs, model):
    """An agent that reads thermal zones and cpufreq from `fake_sysfs`."""
    agent = AgentProcess(
        tmp_path_factory.mktemp("cache"), env={"EDGELOOP_SYSFS_ROOT": str(fake_sysfs)}
    )
    channel, stub = insecure_stub(agent)
    push(stub, model)
    try:
        yield stub
    finally:
        channel.close()
        agent.stop()


def _temperature(root: Path, celsius: float) -> None:
    _write(root, "sys/class/thermal/thermal_zone0/temp", str(int(celsius * 1000)))


# ----------------------------------------------------------------- processes


def test_no_process_starts_on_the_device_while_a_benchmark_runs(agent, model):
    proc, stub = agent
    # a first benchmark waits until the agent's start-up processes are done (zygote, Infer
    # worker, runtime probe); once its own process has gone, what remains is the steady state
    first = EventReader(stub, pb.BenchmarkRequest(sha256=sha(model), options=_options(0.01)))
    assert first.result().error_kind == pb.ERROR_KIND_NONE
    wait_for(lambda: not _workers(proc.pid), 30, "the first benchmark's process to end")
    assert len(_zygotes(proc.pid)) == 1
    before = set(_below(proc.pid))
    reader = EventReader(
        stub, pb.BenchmarkRequest(sha256=sha(model), options=_options(seconds=2.0))
    )
    reader.until_running()
    seen: list[set[int]] = []
    while True:
        seen.append(set(_below(proc.pid)))
        try:
            _, event = reader.events.get(timeout=0.02)
        except Exception:  # queue.Empty: still running
            continue
        if event is None or event.WhichOneof("event") == "result":
            break
    assert event is not None and event.result.error_kind == pb.ERROR_KIND_NONE
    assert len(seen) > 50
    # the benchmark ran in one process, forked before it got its job, and nothing else
    # started until it had exited
    started = set().union(*seen) - before
    assert len(started) == 1, started
    assert any(started <= s for s in seen)
    assert all(s <= before | started for s in seen), [s for s in seen if not s <= before | started]
    # afterwards nothing new starts: the same zygote forks the next benchmark's process
    wait_for(lambda: not started & set(_below(proc.pid)), 30, "the benchmark process to end")
    assert set(_below(proc.pid)) == before


def test_the_one_shot_bench_starts_one_benchmark_process_and_no_spare(model, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(model)
    out = tmp_path / "result.json"
    with out.open("w") as stdout:
        bench = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "device_agent",
                "bench",
                str(path),
                "--json",
                "--runs",
                "3",
                "--min-seconds",
                "0.5",
                "--power-sensor",
                "none",
            ],
            stdout=stdout,
            stderr=subprocess.DEVNULL,
        )
        workers: set[int] = set()
        while bench.poll() is None:
            workers |= _workers(bench.pid)
            time.sleep(0.01)
    assert bench.returncode == 0, out.read_text()[-500:]
    assert len(workers) == 1, workers


# ----------------------------------------------------------------- pinning, state


def test_cpu_affinity_pins_every_thread_of_the_benchmark_process(agent, model):
    proc, stub = agent
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU here: pinning to a subset cannot be told from no pinning")
    wanted = [cpus[-1]]
    reader = EventReader(
        stub,
        pb.BenchmarkRequest(
            sha256=sha(model), options=_options(seconds=1.5, threads=2, cpu_affinity=wanted)
        ),
    )
    reader.until_running()
    masks = set()
    for pid in _workers(proc.pid):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                masks.add(frozenset(os.sched_getaffinity(int(task.name))))
            except OSError:
                pass  # a thread that ended meanwhile
    result = reader.result()
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert list(result.device_state.affinity) == wanted
    assert masks == {frozenset(wanted)}


def test_cpu_affinity_outside_the_agents_cpus_is_a_bad_request(agent, model):
    _, stub = agent
    outside = max(os.sched_getaffinity(0)) + 1
    reader = EventReader(
        stub, pb.BenchmarkRequest(sha256=sha(model), options=_options(cpu_affinity=[outside]))
    )
    result = reader.result()
    assert result.error_kind == pb.ERROR_KIND_BAD_REQUEST
    assert "cpu_affinity" in result.error_message and str(outside) in result.error_message


def test_every_result_carries_the_device_state(agent, model):
    _, stub = agent
    result = EventReader(stub, pb.BenchmarkRequest(sha256=sha(model), options=_options())).result()
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    state = result.device_state
    assert state.os == platform.system() and state.kernel == platform.release()
    assert state.python_version == platform.python_version() and state.cpu_model
    assert list(state.affinity) == sorted(os.sched_getaffinity(0))
    # a failed benchmark carries it too
    failed = EventReader(
        stub, pb.BenchmarkRequest(sha256=sha(model), options=_options(runtime="tflite"))
    ).result()
    assert failed.error_kind != pb.ERROR_KIND_NONE
    assert failed.device_state.kernel == platform.release()


def test_governor_and_frequency_of_the_pinned_cpus_are_recorded(sysfs_agent, model, fake_sysfs):
    cpu = max(os.sched_getaffinity(0))
    _write(fake_sysfs, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor", "powersave")
    _write(fake_sysfs, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", "1200000")
    try:
        result = EventReader(
            sysfs_agent,
            pb.BenchmarkRequest(sha256=sha(model), options=_options(cpu_affinity=[cpu])),
        ).result()
    finally:
        base = f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        _write(fake_sysfs, f"{base}/scaling_governor", "performance")
        _write(fake_sysfs, f"{base}/scaling_cur_freq", "2400000")
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert result.device_state.governor == "powersave"
    assert result.device_state.cpu_freq_mhz == pytest.approx(1200.0)


# ----------------------------------------------------------------- settling, thermal


def test_cooldown_waits_before_the_model_loads(agent, model):
    _, stub = agent
    reader = EventReader(
        stub, pb.BenchmarkRequest(sha256=sha(model), options=_options(cooldown_s=1.0))
    )
    phases = []
    while True:
        _, event = reader.next()
        assert event is not None, reader.error
        if event.WhichOneof("event") == "result":
            break
        phases.append(event.progress.phase)
    result = event.result
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert result.thermal.cooldown_waited_s >= 1.0
    assert "cooldown" in phases and phases.index("cooldown") < phases.index("loading")
    assert result.wall_s < result.thermal.cooldown_waited_s + 60  # the wait is not the child's


def test_an_unreachable_start_temperature_gives_up_after_its_timeout_with_a_warning(
    sysfs_agent, model, fake_sysfs
):
    _temperature(fake_sysfs, 70.0)
    try:
        options = _options(max_start_temp_c=30.0, start_temp_timeout_s=1.0)
        result = EventReader(
            sysfs_agent, pb.BenchmarkRequest(sha256=sha(model), options=options)
        ).result()
    finally:
        _temperature(fake_sysfs, 40.0)
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message  # measured anyway
    assert 1.0 <= result.thermal.cooldown_waited_s < 5.0
    assert any("max_start_temp_c" in w and "70.0" in w for w in result.warnings), result.warnings


def test_the_start_waits_until_the_device_has_cooled(sysfs_agent, model, fake_sysfs):
    _temperature(fake_sysfs, 70.0)
    options = _options(max_start_temp_c=45.0, start_temp_timeout_s=60.0)
    reader = EventReader(sysfs_agent, pb.BenchmarkRequest(sha256=sha(model), options=options))
    try:
        first = reader.until_running()
        assert first.phase == "cooldown"
        time.sleep(1.0)
        _temperature(fake_sysfs, 42.0)
        result = reader.result()
    finally:
        _temperature(fake_sysfs, 40.0)
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert 1.0 <= result.thermal.cooldown_waited_s < 5.0
    assert not any("max_start_temp_c" in w for w in result.warnings)
    assert result.thermal.temperature_c_before == pytest.approx(42.0)


def test_a_real_thermal_zone_that_stays_too_warm_ends_the_wait_at_the_timeout(agent, model):
    if read_thermal().temperature_c is None:
        pytest.skip("no thermal zone is readable on this machine (sysfs thermal_zone*/temp)")
    _, stub = agent
    options = _options(max_start_temp_c=1.0, start_temp_timeout_s=0.5)
    result = EventReader(stub, pb.BenchmarkRequest(sha256=sha(model), options=options)).result()
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    assert result.thermal.cooldown_waited_s >= 0.5
    assert any("max_start_temp_c" in w for w in result.warnings)


def test_thermal_readings_bracket_the_timed_window_and_a_rise_is_flagged(
    sysfs_agent, model, fake_sysfs
):
    """90 °C at load, 60 °C from the warm-up on, 80 °C once the timed runs go: the readings
    are the ones right before and after the timed window, and a 20 °C rise is flagged."""
    _temperature(fake_sysfs, 90.0)
    options = _options(seconds=1.5, warmup_min_seconds=1.0)
    reader = EventReader(sysfs_agent, pb.BenchmarkRequest(sha256=sha(model), options=options))
    try:
        while True:
            _, event = reader.next()
            assert event is not None, reader.error
            if event.WhichOneof("event") == "result":
                break
            if event.progress.phase == "warmup":
                _temperature(fake_sysfs, 60.0)
            elif event.progress.phase == "timed":
                _temperature(fake_sysfs, 80.0)
    finally:
        _temperature(fake_sysfs, 40.0)
    result = event.result
    assert result.error_kind == pb.ERROR_KIND_NONE, result.error_message
    thermal = result.thermal
    assert thermal.temperature_c_before == pytest.approx(60.0)
    assert thermal.temperature_c_after == pytest.approx(80.0)
    assert thermal.temperature_rise_c == pytest.approx(20.0)
    assert thermal.temperature_rise_c > TEMPERATURE_RISE_FLAG_C
    assert thermal.temperature_rose
    assert any("temperature rose 20.0 °C" in w for w in result.warnings), result.warnings


# ----------------------------------------------------------------- peak memory


class _Model:
    """A runtime's loaded model that does nothing, or keeps `grow_mb` more memory from its
    `grow_at`-th run on."""

    inputs = [TensorInfo("x", (1, 4), "float32")]
    outputs = [TensorInfo("y", (1, 4), "float32")]
    accelerator = "cpu"

    def __init__(self, grow_at: int = 0, grow_mb: int = 0) -> None:
        self.runs, self.grow_at, self.grow_mb, self.kept = 0, grow_at, grow_mb, None

    def set_inputs(self, arrays) -> None:
        pass

    def run(self) -> None:
        self.runs += 1
        if self.grow_at and self.runs == self.grow_at:
            self.kept = b"\x01" * (self.grow_mb * 2**20)  # written: resident

    def get_outputs(self):
        return []

    def close(self) -> None:
        self.kept = None


class _Runtime:
    name = "fake"

    def __init__(self, model: _Model) -> None:
        self.model = model

    def load(self, path, **kwargs) -> _Model:
        return self.model

    def status(self):
        return type("Status", (), {"version": "0"})()


def _measure_in_process(monkeypatch, tmp_path, model: _Model, **options) -> pb.BenchmarkResult:
    if not memory.reset_peak():
        pytest.skip("the peak RSS mark cannot be reset here (/proc/self/clear_refs)")
    path = tmp_path / "m.bin"
    path.write_bytes(b"\0" * 16)
    monkeypatch.setattr(
        "device_agent.measure.harness.resolve_runtime", lambda name, fmt: _Runtime(model)
    )
    opts = with_defaults(pb.BenchmarkOptions(power_sensor="none", **options))
    return run_benchmark(str(path), "onnx", opts, emit=lambda progress: None)


def test_peak_rss_covers_memory_the_model_takes_during_the_timed_loop(monkeypatch, tmp_path):
    warmup = 5
    # run 1 is the first inference, then `warmup` warm-up runs; the 10th timed run grows
    model = _Model(grow_at=1 + warmup + 10, grow_mb=64)
    result = _measure_in_process(
        monkeypatch,
        tmp_path,
        model,
        warmup_runs=warmup,
        warmup_min_seconds=1e-9,
        min_runs=50,
        min_seconds=0.05,
        max_runs=50,
    )
    assert model.runs == 1 + warmup + 50
    assert result.memory.peak_rss_mb >= 60


def test_peak_rss_does_not_count_the_harness_own_latency_samples(monkeypatch, tmp_path):
    runs = 400_000  # 3 MB of samples: more than the in-memory block, so some spill to a file
    result = _measure_in_process(
        monkeypatch,
        tmp_path,
        _Model(),
        warmup_runs=1,
        warmup_min_seconds=1e-9,
        min_runs=runs,
        min_seconds=1e-9,
        max_runs=runs,
        keep_samples=100,
    )
    assert result.latency.n == runs
    assert result.memory.peak_rss_mb < 1.0


# ----------------------------------------------------------------- sensor choice


@pytest.fixture
def sensors_available(monkeypatch):
    """Makes the named sensors available (and every other unavailable), without hardware."""

    def make(*names: str) -> None:
        for name, cls in registry.SENSORS.items():
            found = Availability(name in names, "" if name in names else "stubbed off")
            monkeypatch.setattr(cls, "availability", classmethod(lambda c, f=found: f))

    return make


def test_the_sensor_follows_the_accelerator(sensors_available):
    sensors_available("nvml", "ina3221", "rapl", "android-battery", "command")
    assert registry.pick_sensor("", accelerator="cuda").name == "nvml"
    assert registry.pick_sensor("", accelerator="cpu").name == "ina3221"
    sensors_available("nvml", "rapl")
    assert registry.pick_sensor("", accelerator="cpu").name == "rapl"  # not the GPU board
    assert registry.pick_sensor("", accelerator="cuda").name == "nvml"
    sensors_available("nvml")
    assert registry.pick_sensor("", accelerator="cpu") is None
    sensors_available("rapl")
    assert registry.pick_sensor("", accelerator="cuda") is None  # the CPU package is not the GPU
    sensors_available("ina3221")
    assert registry.pick_sensor("", accelerator="cuda").name == "ina3221"  # Jetson: board rails


def test_a_sensor_named_explicitly_wins_over_the_accelerator(sensors_available):
    sensors_available("nvml", "rapl")
    assert registry.pick_sensor("nvml", accelerator="cpu").name == "nvml"
    assert registry.pick_sensor("rapl", accelerator="cuda").name == "rapl"
