"""Fan-out of the validation gate: validating on N agents vs on 1, with short options.

    python bench/bench_fleet.py [--devices 8] [--repeats 3]

Starts N real agents on loopback ports and runs the full gate (connect, push, benchmark,
budgets, parity against the torch model, on-device accuracy on digits) on 1 device and on all
N, alternating, after one warm-up round. Every round pushes a FRESH model (the digits CNN with
one bias nudged by 1e-6 × round, exported anew outside the timed region), so "push" is a real
upload on every device, not a cache hit. Benchmark options are short (2 warm-up runs, 20
timed runs / 0.05 s, no power sensor), so the figure is about the gate, not about a long
fixed timed window per agent that would hide the host's cost.

Reported, medians over the repeats:
- wall time on 1 and on N devices, and their ratio. Not a host-only figure: all N agents'
  on-device work (benchmark children, inference for parity and accuracy) shares this
  machine's cores, which a real fleet does not;
- push and benchmark apart: the median over devices of each check's wall time;
- the host's own cost per added device: (a) host CPU seconds (this process, all threads)
  of the N-device gate minus the 1-device gate, divided by N - 1; (b) wall time beyond the
  slowest device's own span (gate wall minus the longest per-device validate span), N-device
  minus 1-device, divided by N - 1. Target: <= 20 ms per device for each.

Prints a table and writes bench/results/bench_fleet.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import print_table, write_results  # noqa: E402
from toolkit.devices.fleet import Fleet  # noqa: E402
from toolkit.devices.profile import Budgets, DeviceProfile  # noqa: E402
from toolkit.measurement import BenchmarkOptions  # noqa: E402
from toolkit.transport.local import AgentProcess  # noqa: E402
from toolkit.validate import GateConfig, run_gate  # noqa: E402

SHORT = BenchmarkOptions(warmup_runs=2, warmup_min_seconds=0.01, min_runs=20, min_seconds=0.05,
                         power_sensor="none")
TARGET_HOST_MS_PER_DEVICE = 20.0


def _fresh_artifact(folder: Path, round_no: int) -> Path:
    """The digits CNN with its last bias nudged by 1e-6 × round: a new sha each round, the
    same outputs within parity tolerance."""
    from toolkit.export import export_tflite
    from toolkit.models import load_model

    loaded = load_model("digits-cnn")
    with torch.no_grad():
        last = [p for name, p in loaded.module.named_parameters() if name.endswith("bias")][-1]
        last[0] += 1e-6 * round_no
    path = folder / f"digits-cnn-{round_no}.tflite"
    return export_tflite(loaded.module, loaded.input_shape, path)


def _gate(artifact: Path, fleet: Fleet, config: GateConfig) -> dict:
    """One timed gate run: wall, host CPU, per-device spans and check durations."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    report = run_gate(artifact, fleet, config)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0

    def durations(check: str) -> list[float]:
        return [c.duration_s for d in report.devices for c in d.checks if c.check == check]

    spans = [d.duration_s for d in report.devices]
    return {
        "wall_s": wall, "host_cpu_s": cpu, "passed": report.passed,
        "slowest_device_span_s": max(spans), "beyond_slowest_s": wall - max(spans),
        "push_s": statistics.median(durations("push")),
        "benchmark_s": statistics.median(durations("benchmark")),
        "failures": [f"{d.device}: {c.check}: {c.message}" for d in report.devices
                     for c in d.failures][:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.devices < 2:
        parser.error("--devices: expected at least 2")
    torch.set_num_threads(1)
    n = str(args.devices)
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        config = GateConfig(reference_model="digits-cnn", data="digits", options=SHORT,
                            store=False)
        budgets = Budgets(latency_p90_ms=50.0, memory_mb=500.0, size_kb=1024.0)
        agents = [AgentProcess(work / f"cache{i}") for i in range(args.devices)]
        try:
            profiles = tuple(DeviceProfile(name=f"agent-{i}", address=a.address,
                                           budgets=budgets) for i, a in enumerate(agents))
            fleets = {"1": Fleet("one", profiles[:1]), n: Fleet("many", profiles)}
            _gate(_fresh_artifact(work, 0), fleets[n], config)  # warm-up: first children
            rounds: dict[str, list[dict]] = {"1": [], n: []}
            round_no = 0
            for _ in range(args.repeats):
                for key, fleet in fleets.items():
                    round_no += 1
                    artifact = _fresh_artifact(work, round_no)  # outside the timed region
                    rounds[key].append(_gate(artifact, fleet, config))
        finally:
            for agent in agents:
                agent.stop()

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in rounds[key])

    one = {f: med("1", f) for f in ("wall_s", "host_cpu_s", "beyond_slowest_s", "push_s",
                                     "benchmark_s", "slowest_device_span_s")}
    many = {f: med(n, f) for f in one}
    added = args.devices - 1
    figures = {
        "wall_one_s": one["wall_s"], "wall_many_s": many["wall_s"],
        "ratio_many_to_one": many["wall_s"] / one["wall_s"],
        "push_one_s": one["push_s"], "push_many_s": many["push_s"],
        "benchmark_one_s": one["benchmark_s"], "benchmark_many_s": many["benchmark_s"],
        "host_cpu_ms_per_added_device": (many["host_cpu_s"] - one["host_cpu_s"]) / added * 1e3,
        "host_wall_ms_per_added_device":
            (many["beyond_slowest_s"] - one["beyond_slowest_s"]) / added * 1e3,
    }
    passed = all(r["passed"] for rs in rounds.values() for r in rs)
    met = {k: figures[k] <= TARGET_HOST_MS_PER_DEVICE
           for k in ("host_cpu_ms_per_added_device", "host_wall_ms_per_added_device")}

    def verdict(key: str) -> str:
        return f"≤ {TARGET_HOST_MS_PER_DEVICE:g} ms: {'met' if met[key] else 'MISSED'}"

    rows = [
        (f"gate wall: {n} devices vs 1", f"{many['wall_s']:.2f} vs {one['wall_s']:.2f} s",
         f"{figures['ratio_many_to_one']:.2f}x", "(reported)"),
        ("push (median per device)", f"{many['push_s'] * 1e3:.0f} vs {one['push_s'] * 1e3:.0f} ms",
         "", "(reported)"),
        ("benchmark (median per device)",
         f"{many['benchmark_s'] * 1e3:.0f} vs {one['benchmark_s'] * 1e3:.0f} ms", "",
         "(reported)"),
        ("host CPU per added device", f"{figures['host_cpu_ms_per_added_device']:.1f} ms", "",
         verdict("host_cpu_ms_per_added_device")),
        ("host wall beyond slowest device, per added device",
         f"{figures['host_wall_ms_per_added_device']:.1f} ms", "",
         verdict("host_wall_ms_per_added_device")),
    ]
    print_table(rows, ("figure", f"{n} devices vs 1", "ratio", "target"))
    print(f"all gates passed: {passed}")
    path = write_results("bench_fleet", {
        "devices": args.devices, "repeats": args.repeats,
        "options": {"warmup_runs": SHORT.warmup_runs,
                    "warmup_min_seconds": SHORT.warmup_min_seconds,
                    "min_runs": SHORT.min_runs, "min_seconds": SHORT.min_seconds,
                    "power_sensor": SHORT.power_sensor},
        "gate": "connect, push (fresh model each round), benchmark, 3 budgets, parity, "
                "accuracy (digits)",
        "figures": figures, "met": met,
        "target_host_ms_per_added_device": TARGET_HOST_MS_PER_DEVICE,
        "median_one": one, "median_many": many, "rounds": rounds, "all_passed": passed,
    })
    print(f"wrote {path}")
    return 0 if passed and all(met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
