"""Runs a bench script N times, each a fresh process, and writes every figure's median and spread.

    python bench/repeat.py bench/bench_core.py --runs 3 [-- ARGS FOR THE SCRIPT]
    e.g. python bench/repeat.py bench/bench_fleet.py --runs 3 -- --devices 8
    python bench/repeat.py bench/bench_core.py --runs 3 --against a6db53f -- --parts overhead

With `--against COMMIT`, every run is a pair, interleaved so both sides see the same load: the
script first in a temporary git worktree at COMMIT, with that commit's code on PYTHONPATH, then
in this tree. Both sides measure alike: the worktree gets this tree's `bench/` and `tests/`
(the script and the helpers it measures with), so only the code measured is COMMIT's. It writes
`bench/results/<name>.before_after.json` with both sides' figures.

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, RESULTS_ENV, ROOT, provenance  # noqa: E402

SKIP_KEYS = ("provenance", "unix_time")  # stamps, not figures
MEASURING_FOLDERS = ("bench", "tests")
"""What `--against` takes from this tree for both sides: the scripts and the helpers they use."""


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
        out[path] = {
            "median": median,
            "min": min(present),
            "max": max(present),
            "rel_spread": spread,
            "n": len(present),
            "values": values,
        }
    return out


def run_once(
    script: Path, script_args: list[str], label: str, folder: Path, timeout_s: float, tree: Path
) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """One cold run of `script` (a path inside `tree`) with `tree` first on sys.path; returns
    its record and its JSON (None when it wrote none)."""
    folder.mkdir(parents=True)
    env = dict(os.environ, **{RESULTS_ENV: str(folder)})
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(tree), env.get("PYTHONPATH")) if x)
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"== {label}: {script} {' '.join(script_args)} (load {load})", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(script), *script_args], env=env, cwd=tree, timeout=timeout_s
        )
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = None
    wall = time.perf_counter() - started
    written = sorted(folder.glob("*.json"))
    record: dict[str, Any] = {
        "run": label,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "load_avg_before": load,
        "json": [p.name for p in written],
    }
    data = None
    if written:
        data = json.loads(written[0].read_text())
        record["provenance"] = data.get("provenance")
    else:
        record["failed"] = "no JSON written" if code is not None else "timed out"
    print(f"== {label}: exit {code}, {wall:.0f} s", flush=True)
    return record, data


def run_all(
    script: Path, script_args: list[str], n: int, timeout_s: float, tree: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs, results = [], []
    with tempfile.TemporaryDirectory(prefix="bench-repeat-") as tmp:
        for i in range(n):
            record, data = run_once(
                script, script_args, f"run {i + 1}/{n}", Path(tmp) / f"run{i}", timeout_s, tree
            )
            record["run"] = i + 1
            runs.append(record)
            if data is not None:
                results.append(data)
    return runs, results


def before_after(args: argparse.Namespace, name: str, script_args: list[str]) -> int:
    """Pairs of runs, `--against` COMMIT then this tree, interleaved."""
    script = args.script.resolve()
    relative = script.relative_to(ROOT)
    sides: dict[str, dict[str, list]] = {
        side: {"runs": [], "results": []} for side in ("before", "after")
    }
    with tempfile.TemporaryDirectory(prefix="bench-before-after-") as tmp:
        worktree = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(worktree), args.against],
            cwd=ROOT,
            check=True,
        )
        try:
            for folder in MEASURING_FOLDERS:  # measured alike: only the code measured differs
                shutil.copytree(ROOT / folder, worktree / folder, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "results"))
            for i in range(args.runs):
                for side, tree in (("before", worktree), ("after", ROOT)):
                    record, data = run_once(
                        tree / relative,
                        script_args,
                        f"{side} {i + 1}/{args.runs}",
                        Path(tmp) / f"{side}{i}",
                        args.timeout_s,
                        tree,
                    )
                    sides[side]["runs"].append(record)
                    if data is not None:
                        sides[side]["results"].append(data)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False
            )
    if not sides["before"]["results"] or not sides["after"]["results"]:
        print("a side wrote no result; nothing to compare", file=sys.stderr)
        return 1
    out = {
        "provenance": provenance(),
        "script": str(args.script),
        "script_args": script_args,
        "runs_asked": args.runs,
        "against": args.against,
        **{
            side: {
                "commits": sorted(
                    {(r.get("provenance") or {}).get("git", {}).get("sha") for r in v["runs"]}
                    - {None}
                ),
                "figures": summarize(v["results"]),
                "runs": v["runs"],
                "results": v["results"],
            }
            for side, v in sides.items()
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.before_after.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path, help="a bench script, e.g. bench/bench_core.py")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument(
        "--timeout-s", type=float, default=3600, help="most seconds one run may take (default 3600)"
    )
    parser.add_argument("--name", help="result name (default: the script's, without bench_)")
    parser.add_argument(
        "--against",
        metavar="COMMIT",
        help="interleave each run with one at COMMIT (see the module docstring)",
    )
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])  # what follows `--` goes to the script
    script_args = argv[cut + 1 :]
    if args.runs < 1:
        parser.error("--runs: expected a whole number >= 1")
    name = args.name or args.script.stem.removeprefix("bench_")
    if args.against:
        return before_after(args, name, script_args)
    runs, results = run_all(args.script.resolve(), script_args, args.runs, args.timeout_s, ROOT)
    if not results:
        print("no run wrote a result; nothing to summarize", file=sys.stderr)
        return 1
    shas = {(r.get("provenance") or {}).get("git", {}).get("sha") for r in runs}
    out = {
        "provenance": provenance(),
        "script": str(args.script),
        "script_args": script_args,
        "runs_asked": args.runs,
        "runs_with_results": len(results),
        "commits": sorted(s for s in shas if s),
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
