"""GPU check: a real agent on an NVIDIA machine, the torch CUDA runtime and the NVML sensor.

Run on a machine with an NVIDIA GPU (it exits 2 with a reason on one without):

    PYTHONPATH=. python bench/gpu_check.py --out bench/results/gpu.json

What it measures, each in one run of this script:
1. A ResNet-18 from the project's zoo, exported with torch.export (`.pt2`), benchmarked by a
   real agent started on 127.0.0.1 (the same `local_agent` every user gets) on the torch
   runtime with accelerator `cuda` and the `nvml` power sensor: latency, idle-subtracted
   energy per inference, and the same model with accelerator `cpu` for comparison.
2. ONNX Runtime's providers on that machine (whether CUDAExecutionProvider is there).
3. NVML's total-energy counter against the integral of its power samples over one window of
   steady GPU load (matrix products): the two should agree within a few percent.
The JSON records the git sha, the machine and every figure; nothing is estimated.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def counter_vs_samples(seconds: float = 6.0, rate_hz: float = 20.0) -> dict:
    """Runs matrix products on the GPU for `seconds` while reading NVML power at `rate_hz`
    and the total-energy counter at both ends; returns both energies."""
    import torch

    from device_agent.sensors.nvml import NvmlSensor

    sensor = NvmlSensor()
    sensor.open()
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            for _ in range(8):
                a @ a
            torch.cuda.synchronize()

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(1.0)  # let the clocks settle under load
    points: list[tuple[float, float]] = []
    e0, t0 = sensor.read_energy_j(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        before = time.monotonic()
        watts = sensor.read_watts()
        points.append(((before + time.monotonic()) / 2, watts))
        time.sleep(max(0.0, 1 / rate_hz - (time.monotonic() - before)))
    e1, t1 = sensor.read_energy_j(), time.monotonic()
    stop.set()
    worker.join()
    sensor.close()
    area = sum((tb - ta) * (wa + wb) / 2 for (ta, wa), (tb, wb) in zip(points, points[1:]))
    span = points[-1][0] - points[0][0]
    integrated_j = area / span * (t1 - t0)
    counter_j = (e1 - e0) if e0 is not None and e1 is not None else None
    return {
        "window_s": t1 - t0,
        "samples": len(points),
        "rate_hz": rate_hz,
        "mean_w_samples": area / span,
        "energy_j_integrated_samples": integrated_j,
        "energy_j_counter": counter_j,
        "counter_over_samples": (counter_j / integrated_j) if counter_j else None,
    }


def agent_runs(work: Path) -> dict:
    """Benchmarks ResNet-18 (.pt2) on a real local agent: cuda with nvml, then cpu."""
    import torch

    from toolkit.measurement import BenchmarkOptions
    from toolkit.models.zoo import ZOO, build
    from toolkit.transport.local import local_agent

    model = build("resnet18", **ZOO["resnet18"].published_config).eval()  # 1000 classes
    shape = (8, 3, 224, 224)
    path = work / "resnet18.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(shape),)), str(path))
    runs = {}
    with local_agent(cache_dir=work / "agent-cache") as device:
        info = device.info()
        runs["device"] = {
            "runtimes": {r.name: [r.version, list(r.accelerators)] for r in info.runtimes},
            "sensors": {s.name: s.available for s in info.sensors},
        }
        # "" lets the agent pick the sensor that follows the accelerator (nvml for CUDA only).
        for accel, sensor, seconds in (("cuda", "nvml", 5.0), ("cuda", "", 3.0), ("cpu", "", 3.0)):
            options = BenchmarkOptions(
                accelerator=accel, power_sensor=sensor, min_seconds=seconds, idle_seconds=2.0
            )
            m = device.benchmark(path, options)
            runs[f"{accel}:{sensor or 'auto'}"] = {
                "ok": m.ok,
                "error": m.error_message,
                "batch": shape[0],
                "p50_ms": m.latency.p50_ms if m.ok else None,
                "p90_ms": m.latency.p90_ms if m.ok else None,
                "cv": m.latency.cv if m.ok else None,
                "n": m.latency.n if m.ok else None,
                "timed_window_s": m.timed_window_s,
                "power": m.power.__dict__ if m.power else None,
                "thermal": m.thermal.__dict__ if getattr(m, "thermal", None) else None,
                "warnings": list(m.warnings),
            }
    return runs


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device here; nothing to measure", file=sys.stderr)
        return 2
    report = {
        "git_sha": _git_sha(),
        "machine": {
            "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_cores": __import__("os").cpu_count(),
            "platform": platform.platform(),
        },
        "unix_time": time.time(),
        "onnxruntime_providers": onnxruntime_providers(),
    }
    report["nvml_counter_vs_samples"] = counter_vs_samples()
    print(json.dumps(report["nvml_counter_vs_samples"], indent=1), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report["agent"] = agent_runs(Path(tmp))
        except Exception as exc:  # noqa: BLE001 - keep the NVML figures; say what failed
            report["agent"] = {"error": f"{type(exc).__name__}: {exc}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
