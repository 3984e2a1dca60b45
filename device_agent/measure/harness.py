"""The benchmark itself, run inside a fresh child process (see worker.py).

Order: import the runtime → sample buffer, baseline RSS → load (timed) → first inference
(timed) → warm-up (count and seconds) → power sensor (named, or chosen for the accelerator
the model loaded on) → idle power baseline → thermal reading and CPU frequency → timed runs
until both a minimum count and a minimum duration are reached, power sampled in a thread →
thermal reading, peak RSS (so it covers the timed loop) → statistics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from device_agent.measure import memory
from device_agent.measure.device_state import cpu_freq_mhz, device_state, other_cpus
from device_agent.measure.inputs import benchmark_inputs
from device_agent.measure.samples import SampleBuffer
from device_agent.measure.stats import HIGH_CV, latency_from_samples
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.runtimes.base import TensorInfo
from device_agent.runtimes.registry import resolve_runtime
from device_agent.sensors import thermal
from device_agent.sensors.base import SensorError
from device_agent.sensors.registry import pick_sensor
from device_agent.sensors.sampler import PowerSampler, energy_per_inference_mj

Emit = Callable[[pb.Progress], None]
PROGRESS_EVERY_S = 0.25
PER_OP_MAX_RUNS = 50  # runs under a per-operator profiler (at most min_runs)


def tensor_spec(info: TensorInfo) -> pb.TensorSpec:
    spec = pb.TensorSpec(name=info.name, shape=list(info.shape), dtype=info.dtype)
    if info.scale is not None:
        spec.scale = info.scale
        spec.zero_point = info.zero_point or 0
    return spec


class _Clock:
    """Progress events at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, emit: Emit, start: float) -> None:
        self.emit, self.start, self.last = emit, start, 0.0

    def tick(self, phase: str, done: int, total: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.emit(pb.Progress(phase=phase, done=done, total=total, elapsed_s=now - self.start))


def run_benchmark(
    model_path: str, model_format: str, options: pb.BenchmarkOptions, emit: Emit
) -> pb.BenchmarkResult:
    """Measures one model; `options` already has defaults filled in. Raises on failure."""
    start = time.perf_counter()
    clock = _Clock(emit, start)
    runtime = resolve_runtime(options.runtime, model_format)
    result = pb.BenchmarkResult(
        runtime=runtime.name,
        threads=options.threads,
        started_unix=time.time(),
    )
    result.options.CopyFrom(options)
    result.options.runtime = runtime.name
    state = device_state()  # affinity: as the agent pinned this process

    load_kwargs = {}
    if runtime.name == "tflm":
        arena = options.tflm_arena_bytes
        if options.find_tflm_arena or not arena:
            from device_agent.measure.arena import smallest_arena

            arena = smallest_arena(model_path, on_probe=lambda n: clock.tick("arena", n, 0, True))
        load_kwargs["arena_bytes"] = arena
        result.memory.tflm_arena_bytes = arena

    # A sensor asked for by name is checked before any work (a bad name is a bad request);
    # the automatic choice waits for the accelerator the model actually loaded on.
    sensor = pick_sensor(options.power_sensor) if options.power_sensor.strip() else None

    samples = SampleBuffer()  # allocated before the baseline: not counted as the model's
    memory.reset_peak()
    baseline_mb = memory.current_rss_mb()
    clock.tick("loading", 0, 1, True)
    t0 = time.perf_counter()
    model = runtime.load(
        model_path, threads=options.threads, accelerator=options.accelerator, **load_kwargs
    )
    result.load_ms = (time.perf_counter() - t0) * 1e3
    result.runtime_version = runtime.status().version  # after load: no extra import or probe
    result.inputs.extend(tensor_spec(i) for i in model.inputs)
    result.accelerator = getattr(model, "accelerator", options.accelerator or "cpu")

    batches = None
    if options.inputs_sha256:  # real samples: pushed beside the model, content-addressed
        from device_agent.measure.real_inputs import load_samples

        batches = load_samples(os.path.join(os.path.dirname(model_path), options.inputs_sha256),
                               model.inputs)
        result.input_batches = len(batches)
    inputs = batches[0] if batches else benchmark_inputs(model.inputs)
    model.set_inputs(inputs)
    t0 = time.perf_counter()
    model.run()
    result.first_inference_ms = (time.perf_counter() - t0) * 1e3
    model.get_outputs()
    result.outputs.extend(tensor_spec(o) for o in model.outputs)

    _loop(model, samples, options.warmup_runs, options.warmup_min_seconds, 0, clock, "warmup",
          batches)
    samples.clear()
    if not options.power_sensor.strip():
        sensor = pick_sensor("", accelerator=result.accelerator)

    sampler = PowerSampler(sensor, cpus=other_cpus()) if sensor is not None else None
    idle = active = None
    if sampler is not None:
        clock.tick("idle", 0, 1, True)
        try:
            idle = sampler.measure_idle(options.idle_seconds)
        except SensorError as exc:
            result.warnings.append(f"power not measured: sensor {sensor.name}: {exc}")
            sampler = None
    before = thermal.read_thermal()
    freq = cpu_freq_mhz(state.affinity)
    if freq is not None:
        state.cpu_freq_mhz = freq
    if sampler is not None:
        try:
            sampler.start()
        except SensorError as exc:
            result.warnings.append(f"power not measured: sensor {sensor.name}: {exc}")
            sampler = None
    window_start = time.perf_counter()
    _loop(model, samples, options.min_runs, options.min_seconds, options.max_runs, clock, "timed",
          batches)
    result.timed_window_s = time.perf_counter() - window_start
    after = thermal.read_thermal()
    peak_mb = memory.peak_rss_mb()  # covers load, warm-up and the timed loop
    if sampler is not None:
        try:
            active = sampler.stop()
        except SensorError as exc:
            result.warnings.append(f"power not measured: sensor {sensor.name}: {exc}")

    keep = options.keep_samples
    result.latency.CopyFrom(latency_from_samples(samples.values(), keep=keep))
    result.memory.baseline_rss_mb = baseline_mb
    result.memory.model_size_bytes = os.path.getsize(model_path)
    result.memory.peak_rss_mb = max(peak_mb - baseline_mb, 0.0)
    if active is not None and idle is not None:
        result.power.CopyFrom(
            pb.PowerStats(
                sensor=sensor.name,
                rate_hz=sampler.rate_hz,
                samples=active.samples,
                mean_w=active.mean_w,
                idle_w=idle.mean_w,
                energy_per_inference_mj=energy_per_inference_mj(
                    active, idle, result.timed_window_s, result.latency.n
                ),
                method=active.method,
            )
        )
    result.device_state.CopyFrom(state)
    _thermal(result, before, after)
    _warn(result)
    if options.per_op:  # after every timed figure and the peak memory: they stay untouched
        _profile_ops(model, runtime.name, inputs, options, result, clock)
    model.close()
    return result


def _profile_ops(model, runtime_name: str, inputs, options, result, clock: _Clock) -> None:
    """Fills result.ops / ops_source / ops_note from the runtime's per-operator profiler; a
    failure there becomes a note and a warning, never a lost measurement."""
    runs = max(1, min(options.min_runs or PER_OP_MAX_RUNS, PER_OP_MAX_RUNS))
    clock.tick("per-op", 0, runs, True)
    try:
        table = model.profile_ops(inputs, runs)
    except Exception as exc:  # the profile is an extra: the timed result stands
        result.ops_note = f"per-operator profile failed: {type(exc).__name__}: {exc}"[:500]
        result.warnings.append(result.ops_note)
        return
    clock.tick("per-op", runs, runs, True)
    if table is None:
        result.ops_note = f"runtime {runtime_name} has no per-operator profile"
        return
    total = table.total_ms
    for row in table.rows:
        result.ops.add(
            name=row.name,
            op_type=row.op_type,
            calls=row.calls,
            mean_ms=row.mean_ms,
            share=row.mean_ms / total if total > 0 else 0.0,
        )
    result.ops_source = table.source
    result.ops_note = table.note


def _loop(
    model,
    samples: SampleBuffer,
    min_runs: int,
    min_seconds: float,
    max_runs: int,
    clock: _Clock,
    phase: str,
    batches: list | None = None,
) -> int:
    """Runs until both `min_runs` and `min_seconds` are reached (or `max_runs`), writing one
    latency (ms) per run into `samples` without allocating; returns the runs done.

    With `batches` (real inputs), run k stages batch k mod len(batches) first, outside the
    timed span: only `model.run()` is timed, as with random inputs."""
    block, capacity = samples.block, samples.capacity
    i = samples.n
    n = 0
    begin = time.perf_counter()
    perf = time.perf_counter_ns
    cycle = len(batches) if batches else 0
    while True:
        if cycle:
            model.set_inputs(batches[n % cycle])
        t0 = perf()
        model.run()
        block[i] = (perf() - t0) / 1e6
        i += 1
        n += 1
        if i == capacity:
            samples.n = i
            samples.spill()
            i = 0
        if max_runs and n >= max_runs:
            break
        if n >= min_runs and time.perf_counter() - begin >= min_seconds:
            break
        clock.tick(phase, n, min_runs)
    samples.n = i
    clock.tick(phase, n, min_runs, True)
    return n


def _thermal(result: pb.BenchmarkResult, before, after) -> None:
    t = result.thermal
    for value, field in (
        (before.cpu_freq_mhz, "cpu_freq_mhz_before"),
        (after.cpu_freq_mhz, "cpu_freq_mhz_after"),
        (before.temperature_c, "temperature_c_before"),
        (after.temperature_c, "temperature_c_after"),
    ):
        if value is not None:
            setattr(t, field, value)
    t.throttled = bool(thermal.throttled(before, after, thermal.max_cpu_freq_mhz()))
    rise = thermal.temperature_rise_c(before, after)
    if rise is not None:
        t.temperature_rise_c = rise
        t.temperature_rose = rise > thermal.TEMPERATURE_RISE_FLAG_C


def _warn(result: pb.BenchmarkResult) -> None:
    lat = result.latency
    if lat.cv > HIGH_CV:
        result.warnings.append(
            f"high variation: CV {lat.cv:.1%} > {HIGH_CV:.0%}; "
            "close other work on the device or run longer"
        )
    if result.thermal.temperature_rose:
        result.warnings.append(
            f"the temperature rose {result.thermal.temperature_rise_c:.1f} °C across the timed "
            f"window (flagged above {thermal.TEMPERATURE_RISE_FLAG_C:g} °C); later runs may "
            "throttle: use cooldown_s or max_start_temp_c"
        )
    if result.thermal.throttled:
        result.warnings.append(
            "the device throttled during the run (frequency or temperature); figures may be low"
        )
