"""Shared bits of the benchmarks: provenance (commit, machine, time), result files, a table.

Every bench JSON carries `provenance()`: the git commit and whether the tree was dirty, the
machine (CPU model, cores, memory, OS, Python, runtime versions), the load averages when the
script started and when it wrote the file, and the time. `EDGELOOP_BENCH_RESULTS` redirects
the result files to another folder (`bench/repeat.py` uses it to keep each run's JSON apart).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RESULTS_ENV = "EDGELOOP_BENCH_RESULTS"
LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]
"""The 1-, 5- and 15-minute load averages when the bench script started (it imports this)."""
RUNTIMES = ("torch", "ai-edge-litert", "litert-torch", "onnxruntime", "grpcio", "numpy",
            "optuna")


def results_dir() -> Path:
    """Where result files go: `$EDGELOOP_BENCH_RESULTS`, else bench/results."""
    return Path(os.environ.get(RESULTS_ENV) or RESULTS)


def git_state() -> dict[str, Any]:
    """The commit the benchmark code is at and whether the working tree differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=30)
        return done.stdout if done.returncode == 0 else ""

    sha = git("rev-parse", "HEAD").strip()
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no")
               .splitlines() if line.strip()]
    return {"sha": sha or None, "dirty": bool(changed), "dirty_files": changed[:50]}


def _versions() -> dict[str, str]:
    out = {}
    for name in RUNTIMES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python and runtime versions, load average."""
    from device_agent.system_info import cpu_model, memory_total_bytes

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_total_bytes() / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": _versions(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def provenance() -> dict[str, Any]:
    """What a bench JSON records about where and when it was made."""
    return {"git": git_state(), "machine": machine(), "load_avg_1_5_15_at_start": LOAD_AT_START,
            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "unix_time": time.time()}


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Writes `<results dir>/<name>.json`: the provenance, then the payload."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"provenance": provenance(), **payload}, indent=2) + "\n")
    return path


def print_table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
