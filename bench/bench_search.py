"""Search efficiency: NetAdapt and Pareto against an exhaustive grid, on digits-cnn, locally.

One run of this script tunes the bundled digits CNN on the local device (a real agent on
127.0.0.1) three times, with the same space, budget and benchmark options: first `grid` (every
point), then `netadapt`, then `pareto` with a trial cap of 30% of grid's measurements. The
bar: each of netadapt and pareto reaches >= 99% of the best feasible accuracy grid found,
using <= 30% of grid's device measurements.

Measurements are cached by (artifact sha256, device, options), so an artifact two strategies
both build is measured once and both see the same figures; each strategy's count is the
number of distinct device measurements its trials rest on, cache hits included.

Usage: python bench/bench_search.py [--ratio 0.35] [--max-drop 1.5] [--min-seconds 0.3]
       [--home DIR]   (default: a fresh, temporary EDGELOOP_HOME: nothing comes from an
                       earlier run; the reference model is trained in it)
Writes bench/results/search.json (the three runs' folders, with their report.html, under
bench/results/search-runs/) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.search.space import default_space  # noqa: E402
from toolkit.tune.budgets import BudgetRequest  # noqa: E402
from toolkit.tune.config import TuneConfig, new_run_id  # noqa: E402
from toolkit.tune.live import LiveView  # noqa: E402
from toolkit.tune.runner import run_tune  # noqa: E402

SHARE = 0.30  # most measurements a strategy may use, as a share of grid's
QUALITY = 0.99  # least accuracy a strategy must reach, as a share of grid's best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.35,
                        help="p90 latency budget as a fraction of the base model's [0.35]")
    parser.add_argument("--max-drop", type=float, default=1.5,
                        help="most accuracy points lost against the base [1.5]")
    parser.add_argument("--min-seconds", type=float, default=0.3,
                        help="timed window of each measurement, seconds [0.3]")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--home", type=Path,
                        help="EDGELOOP_HOME to use [a fresh temporary one: everything is "
                             "trained, built and measured in this run]")
    args = parser.parse_args()
    if args.home:
        os.environ["EDGELOOP_HOME"] = str(args.home)
        return bench(args)
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-search-") as home:
        os.environ["EDGELOOP_HOME"] = home
        return bench(args)


def bench(args: argparse.Namespace) -> int:
    """Runs grid, netadapt and pareto; writes the JSON; returns 0 when both bars hold."""
    stamp = new_run_id()
    base = TuneConfig(
        model="digits-cnn", data="digits", devices=("local",), space=default_space(),
        budgets=BudgetRequest(ratios={"latency_p90_ms": args.ratio},
                              max_accuracy_drop=args.max_drop),
        out_dir=args.out / "search-runs",
    )
    base = replace(base, bench=replace(base.bench, min_seconds=args.min_seconds))
    runs = {}
    grid = _run(replace(base, strategy="grid", run_id=f"{stamp}-grid"))
    runs["grid"] = grid
    cap = max(1, int(SHARE * grid["measurements"]) - 1)  # the base is one measurement too
    runs["netadapt"] = _run(replace(base, strategy="netadapt", run_id=f"{stamp}-netadapt"))
    runs["pareto"] = _run(replace(base, strategy="pareto", trials=cap, run_id=f"{stamp}-pareto"))

    checks = {}
    for name in ("netadapt", "pareto"):
        run = runs[name]
        quality = (run["accuracy_pct"] / grid["accuracy_pct"]
                   if run["feasible"] and grid["feasible"] else None)
        share = run["measurements"] / grid["measurements"]
        checks[name] = {
            "accuracy_share_of_grid": quality,
            "measurement_share_of_grid": share,
            "passes": bool(quality is not None and quality >= QUALITY and share <= SHARE),
        }
    report = {
        "bench": "search", "model": "digits-cnn", "device": "local",
        "host": platform.node(), "python": platform.python_version(),
        "space": base.space.to_mapping(), "space_points": base.space.size,
        "budget": {"latency_p90_ratio": args.ratio, "max_accuracy_drop": args.max_drop,
                   "resolved": grid["budgets"]},
        "bench_options": {"min_seconds": args.min_seconds, "min_runs": base.bench.min_runs},
        "runs": runs, "checks": checks,
        "bar": f">= {QUALITY:.0%} of grid's best feasible accuracy with <= {SHARE:.0%} of "
               "grid's device measurements",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "search.json"
    path.write_text(json.dumps(report, indent=2))
    print()
    print(f"{'strategy':<9} {'feasible':>8} {'accuracy %':>10} {'p90 ms':>9} {'measured':>8} "
          f"{'trials':>6} {'minutes':>7}")
    for name, run in runs.items():
        p90 = run["p90_ms"]
        print(f"{name:<9} {str(run['feasible']):>8} {run['accuracy_pct'] or 0:>10.2f} "
              f"{(p90 or 0):>9.5f} {run['measurements']:>8} {run['trials']:>6} "
              f"{run['wall_s'] / 60:>7.1f}")
    for name, check in checks.items():
        quality = check["accuracy_share_of_grid"]
        shown = f"{quality:.2%}" if quality is not None else "n/a (infeasible)"
        print(f"{name}: {shown} of grid's accuracy with {check['measurement_share_of_grid']:.0%}"
              f" of its measurements -> {'PASS' if check['passes'] else 'FAIL'}")
    print(f"written: {path}")
    return 0 if all(c["passes"] for c in checks.values()) else 1


def _run(config: TuneConfig) -> dict:
    started = time.monotonic()
    result = run_tune(config, live=LiveView(0, stream=sys.stdout))
    best = result.best or {}
    return {
        "run_id": config.run_id,
        "feasible": result.feasible,
        "message": result.message,
        "accuracy_pct": best.get("accuracy_pct"),
        "p90_ms": (best.get("worst") or {}).get("latency_p90_ms"),
        "best_recipe": best.get("recipe"),
        "best_threads": best.get("threads"),
        "measurements": result.measurements,
        "new_measurements": result.new_measurements,
        "trials": result.trials,
        "wall_s": round(time.monotonic() - started, 1),
        "budgets": result.budgets,
        "report": result.report,
    }


if __name__ == "__main__":
    sys.exit(main())
