"""Fan-out of the validation gate: validating on 8 agents vs on 1, side by side in one run.

    python bench/bench_fleet.py [--devices 8] [--repeats 3] [--options quick|default]

Starts N real agents on loopback ports, builds the digits CNN as fp32 .tflite, and runs the
full gate (connect, push, benchmark, budgets, parity against the torch model, on-device
accuracy on digits) on 1 device and on all N, alternating, after one warm-up round. Prints a
table and writes bench/results/bench_fleet.json. Target: N devices take <= 1.5x one device.

All agents share this machine's CPU cores, so device-side work (benchmark child processes,
inference) competes here in a way it does not on a real fleet; `--options quick` keeps the
benchmark's own timed window short so the figure measures the host's fan-out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from toolkit.devices.fleet import Fleet
from toolkit.devices.profile import Budgets, DeviceProfile
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.local import AgentProcess
from toolkit.validate import GateConfig, run_gate

OPTIONS = {
    "quick": BenchmarkOptions(warmup_runs=2, min_runs=20, min_seconds=0.05),
    "default": BenchmarkOptions(),
}
RESULTS = Path(__file__).resolve().parent / "results"


def _artifact(folder: Path) -> Path:
    from toolkit.export import export_tflite
    from toolkit.models import load_model

    loaded = load_model("digits-cnn")
    return export_tflite(loaded.module, loaded.input_shape, folder / "digits-cnn.tflite")


def _agent_cpu_s(agents: list[AgentProcess]) -> float:
    """CPU seconds used so far by the agents and their children (benchmark children, workers)."""
    import psutil

    total = 0.0
    for agent in agents:
        proc = psutil.Process(agent.pid)
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _timed(artifact: Path, fleet: Fleet, config: GateConfig,
           agents: list[AgentProcess]) -> tuple[float, float, bool]:
    """(wall seconds, agents' CPU seconds, all passed) of one gate run."""
    cpu = _agent_cpu_s(agents)
    started = time.perf_counter()
    report = run_gate(artifact, fleet, config)
    return time.perf_counter() - started, _agent_cpu_s(agents) - cpu, report.passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--options", choices=sorted(OPTIONS), default="default")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    artifact = _artifact(work)
    config = GateConfig(reference_model="digits-cnn", data="digits",
                        options=OPTIONS[args.options], store=False)
    budgets = Budgets(latency_p90_ms=50.0, memory_mb=500.0, size_kb=1024.0)
    agents = [AgentProcess(work / f"cache{i}") for i in range(args.devices)]
    try:
        profiles = tuple(DeviceProfile(name=f"agent-{i}", address=a.address, budgets=budgets)
                         for i, a in enumerate(agents))
        one, many = Fleet("one", profiles[:1]), Fleet("many", profiles)
        _timed(artifact, many, config, agents)  # warm-up: first pushes, first children
        times: dict[str, list[float]] = {"1": [], str(args.devices): []}
        cpu: dict[str, list[float]] = {"1": [], str(args.devices): []}
        passed = True
        for _ in range(args.repeats):
            for key, fleet in (("1", one), (str(args.devices), many)):
                seconds, cpu_s, ok = _timed(artifact, fleet, config, agents)
                times[key].append(seconds)
                cpu[key].append(cpu_s)
                passed = passed and ok
    finally:
        for agent in agents:
            agent.stop()
    median_one = statistics.median(times["1"])
    median_many = statistics.median(times[str(args.devices)])
    ratio = median_many / median_one
    cores = os.cpu_count() or 1
    # Device-side CPU work of N agents cannot finish faster than its CPU seconds / cores here.
    cpu_floor = max(median_one, statistics.median(cpu[str(args.devices)]) / cores)
    print(f"{'devices':>8} {'median s':>9} {'agent cpu s':>12}  runs (s)")
    for key, values in times.items():
        print(f"{key:>8} {statistics.median(values):9.2f} {statistics.median(cpu[key]):12.2f}  "
              + ", ".join(f"{v:.2f}" for v in values))
    print(f"ratio {args.devices}/1 = {ratio:.2f} (target <= 1.5); all passed: {passed}")
    print(f"{cores} CPU cores shared by the host and all agents: the agents' own CPU work "
          f"bounds {args.devices} devices at >= {cpu_floor:.2f} s here; measured "
          f"{median_many / cpu_floor:.2f}x that bound")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_fleet.json"
    out.write_text(json.dumps({
        "devices": args.devices, "repeats": args.repeats, "options": args.options,
        "seconds": times, "agent_cpu_seconds": cpu, "median_one_s": median_one,
        "median_many_s": median_many, "ratio": ratio, "target_ratio": 1.5,
        "cpu_bound_floor_s": cpu_floor, "ratio_to_cpu_floor": median_many / cpu_floor,
        "all_passed": passed, "cpu_cores": cores,
        "gate": "connect, push, benchmark, 3 budgets, parity (64 samples), accuracy (digits)",
        "unix_time": time.time(),
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if passed and ratio <= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
