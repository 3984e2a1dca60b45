"""Runs a bench script N times, each a fresh process, and writes every figure's median and spread.

    python bench/repeat.py bench/bench_core.py --runs 3 [-- ARGS FOR THE SCRIPT]
    e.g. python bench/repeat.py bench/bench_fleet.py --runs 3 -- --devices 8

Each run is its own process, so it starts cold the way the script starts: a fresh temporary
data folder, fresh agents, nothing cached from the run before. Each run writes its JSON into a
folder of its own (`EDGELOOP_BENCH_RESULTS`); this script then writes
`bench/results/<name>.repeat.json` with, for every numeric figure (by its dotted path in the
run's JSON): the median, min, max, the relative spread (max - min) / |median|, and the value of
each run; plus each run's exit code, wall time, load average before it, and its provenance
(commit, machine). A run whose script exits non-zero (a missed target) still counts: its
figures are kept. A run that wrote no JSON is recorded as failed and left out of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, RESULTS_ENV, provenance  # noqa: E402

SKIP_KEYS = ("provenance", "unix_time")  # stamps, not figures


def numeric_leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted path, number) of every int/float in a JSON value (bools and stamps skipped)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in SKIP_KEYS:
                continue
            yield from numeric_leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numeric_leaves(item, f"{prefix}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield prefix, float(value)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per figure: median, min, max, relative spread and the per-run values (None where a run
    lacked it)."""
    per_run = [dict(numeric_leaves(r)) for r in runs]
    paths: list[str] = []
    for figures in per_run:
        paths += [p for p in figures if p not in paths]
    out = {}
    for path in paths:
        values = [f.get(path) for f in per_run]
        present = [v for v in values if v is not None]
        median = statistics.median(present)
        spread = (max(present) - min(present)) / abs(median) if median else None
        out[path] = {"median": median, "min": min(present), "max": max(present),
                     "rel_spread": spread, "n": len(present), "values": values}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path, help="a bench script, e.g. bench/bench_core.py")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--timeout-s", type=float, default=3600,
                        help="most seconds one run may take (default 3600)")
    parser.add_argument("--name", help="result name (default: the script's, without bench_)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])  # what follows `--` goes to the script
    script_args = argv[cut + 1:]
    if args.runs < 1:
        parser.error("--runs: expected a whole number >= 1")
    name = args.name or args.script.stem.removeprefix("bench_")
    runs, results = [], []
    with tempfile.TemporaryDirectory(prefix="bench-repeat-") as tmp:
        for i in range(args.runs):
            folder = Path(tmp) / f"run{i}"
            folder.mkdir()
            env = dict(os.environ, **{RESULTS_ENV: str(folder)})
            load = [round(x, 2) for x in os.getloadavg()]
            print(f"== run {i + 1}/{args.runs}: {args.script} {' '.join(script_args)} "
                  f"(load {load})", flush=True)
            started = time.perf_counter()
            try:
                done = subprocess.run([sys.executable, str(args.script), *script_args],
                                      env=env, timeout=args.timeout_s)
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = None
            wall = time.perf_counter() - started
            written = sorted(folder.glob("*.json"))
            record = {"run": i + 1, "exit_code": code, "wall_s": round(wall, 1),
                      "load_avg_before": load, "json": [p.name for p in written]}
            if written:
                data = json.loads(written[0].read_text())
                record["provenance"] = data.get("provenance")
                results.append(data)
            else:
                record["failed"] = "no JSON written" if code is not None else "timed out"
            runs.append(record)
            print(f"== run {i + 1}: exit {code}, {wall:.0f} s", flush=True)
    if not results:
        print("no run wrote a result; nothing to summarize", file=sys.stderr)
        return 1
    shas = {(r.get("provenance") or {}).get("git", {}).get("sha") for r in runs}
    out = {
        "provenance": provenance(),
        "script": str(args.script), "script_args": script_args, "runs_asked": args.runs,
        "runs_with_results": len(results), "commits": sorted(s for s in shas if s),
        "figures": summarize(results),
        "runs": runs,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.repeat.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
