"""Benchmarks on a real agent: statistics, every runtime, failures as data, queueing."""

from __future__ import annotations

import threading
import time

import pytest

from toolkit.measurement import BenchmarkOptions

QUICK = BenchmarkOptions(
    warmup_runs=2, warmup_min_seconds=0.01, min_runs=15, min_seconds=0.2, power_sensor="none"
)


def _check_statistics(m, options: BenchmarkOptions) -> None:
    assert m.ok, m.error_message
    lat = m.latency
    assert lat.n >= options.min_runs
    assert m.timed_window_s >= options.min_seconds
    assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p95_ms <= lat.p99_ms <= lat.max_ms
    assert lat.min_ms <= lat.mean_ms <= lat.max_ms
    assert lat.cv == pytest.approx(lat.std_ms / lat.mean_ms)
    assert len(lat.samples_ms) == min(lat.n, 10_000)  # raw samples kept, evenly thinned past 10k
    assert m.load_ms > 0 and m.first_inference_ms > 0
    assert m.memory.peak_rss_mb >= 0 and m.memory.model_size_bytes > 0
    if options.power_sensor == "none":
        assert m.power is None  # no sensor asked for: no power figure, whatever the machine has
    assert m.device_id and m.runtime_version and m.model_sha256


@pytest.mark.parametrize(
    "kind,runtime",
    [
        ("tflite", "tflite"),
        ("tflite_int8", "tflite"),
        ("onnx", "onnx"),
        ("pt2", "torch"),
    ],
)
def test_benchmark_reports_consistent_statistics(agent, model_files, kind, runtime):
    m = agent.benchmark(getattr(model_files, kind), QUICK)
    _check_statistics(m, QUICK)
    assert m.runtime == runtime
    if kind == "tflite_int8":
        assert m.memory.model_size_bytes < model_files.tflite.stat().st_size


def test_timed_runs_continue_until_both_count_and_duration_are_reached(agent, model_files):
    by_duration = BenchmarkOptions(warmup_runs=1, min_runs=3, min_seconds=0.5)
    m = agent.benchmark(model_files.tflite, by_duration)
    assert m.timed_window_s >= 0.5 and m.latency.n > 3
    by_count = BenchmarkOptions(warmup_runs=1, min_runs=400, min_seconds=0.01)
    m = agent.benchmark(model_files.tflite, by_count)
    assert m.latency.n >= 400


def test_tflm_reports_the_smallest_arena_that_runs(agent, model_files):
    m = agent.benchmark(
        model_files.tflite, BenchmarkOptions(runtime="tflm", min_runs=5, min_seconds=0.05)
    )
    _check_statistics(m, BenchmarkOptions(min_runs=5, min_seconds=0.05))
    arena = m.memory.tflm_arena_bytes
    assert arena and arena > 1024
    # One alignment step below the reported arena no longer runs: it really is the smallest.
    from device_agent.measure.arena import probe

    assert probe(str(model_files.tflite), arena)
    assert not probe(str(model_files.tflite), arena - 128)


def test_a_model_the_runtime_cannot_load_is_a_failed_result_and_the_agent_lives_on(agent, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    m = agent.benchmark(broken, QUICK)
    assert not m.ok
    assert m.error_kind in ("LOAD_FAILED", "CRASHED")
    assert m.error_message
    assert agent.health().ok


def test_a_crashing_child_is_reported_as_crashed(agent, model_files):
    # TFLite Micro aborts the process when its arena is too small: a real crash of the child.
    m = agent.benchmark(model_files.tflite, BenchmarkOptions(runtime="tflm", tflm_arena_bytes=128))
    assert not m.ok and m.error_kind == "CRASHED"
    assert "died" in m.error_message
    assert agent.health().ok


def test_a_hanging_benchmark_is_killed_at_its_timeout(agent, model_files):
    slow = BenchmarkOptions(min_runs=10**7, min_seconds=120, max_runs=10**7, timeout_seconds=2)
    m = agent.benchmark(model_files.tflite, slow)
    assert not m.ok and m.error_kind == "TIMEOUT"
    assert "2 s timeout" in m.error_message
    assert m.wall_s < 30
    assert agent.health().ok


def test_unknown_runtime_and_wrong_format_are_clear_failures(agent, model_files):
    m = agent.benchmark(model_files.tflite, BenchmarkOptions(runtime="onnx"))
    assert not m.ok and m.error_kind == "UNKNOWN_RUNTIME"
    assert "cannot run tflite" in m.error_message


def test_benchmarks_on_one_agent_run_one_at_a_time(agent, model_files):
    options = BenchmarkOptions(warmup_runs=1, min_runs=5, min_seconds=0.6)
    results = []
    events: dict[str, list[tuple[float, str]]] = {"tflite": [], "onnx": []}

    def run(kind):
        def seen(p):
            events[kind].append((time.monotonic(), p.phase))

        results.append(agent.benchmark(getattr(model_files, kind), options, on_progress=seen))

    threads = [threading.Thread(target=run, args=(k,)) for k in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(m.ok for m in results)
    busy = {
        k: [t for t, phase in v if phase in ("loading", "warmup", "timed")]
        for k, v in events.items()
    }
    first, second = sorted(busy.values(), key=min)
    assert max(first) < min(second), "the two benchmarks ran at the same time"
    assert any(phase == "queued" for v in events.values() for _, phase in v)
