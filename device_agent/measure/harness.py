"""The benchmark itself, run inside a fresh child process (see worker.py).

Order: import the runtime → baseline RSS → load (timed) → first inference (timed) →
warm-up (count and seconds) → idle power baseline → timed runs until both a minimum count
and a minimum duration are reached, power sampled in a thread → statistics.
"""

from __future__ import annotations

import os
import time
from array import array
from typing import Callable

from device_agent.measure import memory
from device_agent.measure.inputs import benchmark_inputs
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

    load_kwargs = {}
    if runtime.name == "tflm":
        arena = options.tflm_arena_bytes
        if options.find_tflm_arena or not arena:
            from device_agent.measure.arena import smallest_arena

            arena = smallest_arena(model_path, on_probe=lambda n: clock.tick("arena", n, 0, True))
        load_kwargs["arena_bytes"] = arena
        result.memory.tflm_arena_bytes = arena

    sensor = pick_sensor(options.power_sensor)
    before = thermal.read_thermal()

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

    model.set_inputs(benchmark_inputs(model.inputs))
    t0 = time.perf_counter()
    model.run()
    result.first_inference_ms = (time.perf_counter() - t0) * 1e3
    model.get_outputs()
    result.outputs.extend(tensor_spec(o) for o in model.outputs)

    _loop(model, options.warmup_runs, options.warmup_min_seconds, 0, clock, "warmup")
    # Peak memory is read once the model has run (its arenas are allocated) and before the
    # timed loop, whose sample buffer is the harness's own, not the model's.
    peak_mb = memory.peak_rss_mb()

    sampler = PowerSampler(sensor) if sensor is not None else None
    idle = active = None
    if sampler is not None:
        clock.tick("idle", 0, 1, True)
        try:
            idle = sampler.measure_idle(options.idle_seconds)
            sampler.start()
        except SensorError as exc:
            result.warnings.append(f"power not measured: sensor {sensor.name}: {exc}")
            sampler = None
    window_start = time.perf_counter()
    samples = _loop(model, options.min_runs, options.min_seconds, options.max_runs, clock, "timed")
    result.timed_window_s = time.perf_counter() - window_start
    if sampler is not None:
        try:
            active = sampler.stop()
        except SensorError as exc:
            result.warnings.append(f"power not measured: sensor {sensor.name}: {exc}")
    after = thermal.read_thermal()

    keep = options.keep_samples
    result.latency.CopyFrom(latency_from_samples(samples, keep=keep))
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
                    active, idle, result.latency.mean_ms
                ),
                method=active.method,
            )
        )
    _thermal(result, before, after)
    _warn(result)
    model.close()
    return result


def _loop(
    model, min_runs: int, min_seconds: float, max_runs: int, clock: _Clock, phase: str
) -> array:
    """Runs until both `min_runs` and `min_seconds` are reached (or `max_runs`); ms samples."""
    samples = array("d")
    begin = time.perf_counter()
    perf = time.perf_counter_ns
    while True:
        t0 = perf()
        model.run()
        samples.append((perf() - t0) / 1e6)
        n = len(samples)
        if max_runs and n >= max_runs:
            break
        if n >= min_runs and time.perf_counter() - begin >= min_seconds:
            break
        clock.tick(phase, n, min_runs)
    clock.tick(phase, len(samples), min_runs, True)
    return samples


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


def _warn(result: pb.BenchmarkResult) -> None:
    lat = result.latency
    if lat.cv > HIGH_CV:
        result.warnings.append(
            f"high variation: CV {lat.cv:.1%} > {HIGH_CV:.0%}; "
            "close other work on the device or run longer"
        )
    if result.thermal.throttled:
        result.warnings.append(
            "the device throttled during the run (frequency or temperature); figures may be low"
        )
