"""Search efficiency: NetAdapt and Pareto against an exhaustive grid, on digits-cnn, locally.

    python bench/bench_search.py [--ratio 0.35] [--max-drop 1.5] [--min-seconds 0.3]

Each strategy starts cold: its own empty, temporary EDGELOOP_HOME (results store, trained
reference model, local agent, caches) and `reuse_measurements=False`, so no strategy sees
another's builds or measurements. Same space, budget and benchmark options for all three.

- grid measures every point of the space (the baseline: its best feasible accuracy and its
  number of device measurements);
- netadapt and pareto each get a fixed cap of TRIAL_CAP trials after the base, stated here
  and chosen before any run (not derived from the target).

The target: reach >= 99% of grid's best feasible accuracy using <= 30% of grid's device
measurements. Read from each strategy's trial history in order: the measurements it had used
(distinct artifacts measured, the base included) when its best feasible accuracy first
reached 99% of grid's best; "not reached" when it never did within the cap.

Fine-tune budget: NetAdapt's chain fine-tunes after every prune and ends with a longer
fine-tune, so its winner carries more training than a grid point (2 epochs). To compare the
architectures each search found with the same training, every strategy's winner is rebuilt
with ONE fine-tune of the space's `finetune_epochs` after all its pruning (its prune steps
merged into one, same widths, same quantization and threads), then measured on a fresh local
agent (on-device accuracy, p90 with the search's options). The equal-budget bar: the rebuilt
winner's accuracy >= 99% of grid's rebuilt winner's.

Writes bench/results/search.json and prints a summary; exit 0 when both strategies meet both.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_results  # noqa: E402
from toolkit.search.space import default_space  # noqa: E402
from toolkit.tune.budgets import BudgetRequest  # noqa: E402
from toolkit.tune.config import TuneConfig, new_run_id  # noqa: E402
from toolkit.tune.live import LiveView  # noqa: E402

TRIAL_CAP = 20  # trials after the base for netadapt and pareto; fixed, not from the target
SHARE = 0.30  # the target's most device measurements, as a share of grid's
QUALITY = 0.99  # the target's least accuracy, as a share of grid's best
STRATEGIES = ("grid", "netadapt", "pareto")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.35,
                        help="p90 latency budget as a fraction of the base model's [0.35]")
    parser.add_argument("--max-drop", type=float, default=1.5,
                        help="most accuracy points lost against the base [1.5]")
    parser.add_argument("--min-seconds", type=float, default=0.3,
                        help="timed window of each measurement, seconds [0.3]")
    args = parser.parse_args()
    space = default_space()
    runs = {}
    for strategy in STRATEGIES:
        with tempfile.TemporaryDirectory(prefix=f"edgeloop-bench-search-{strategy}-") as home:
            os.environ["EDGELOOP_HOME"] = home  # empty: nothing from another strategy
            config = TuneConfig(
                model="digits-cnn", data="digits", devices=("local",), space=space,
                strategy=strategy, trials=None if strategy == "grid" else TRIAL_CAP,
                budgets=BudgetRequest(ratios={"latency_p90_ms": args.ratio},
                                      max_accuracy_drop=args.max_drop),
                reuse_measurements=False, run_id=f"{new_run_id()}-{strategy}",
                out_dir=Path(home) / "runs",
            )
            config = replace(config, bench=replace(config.bench, min_seconds=args.min_seconds))
            runs[strategy] = _run(config)
            runs[strategy]["equal_budget"] = _rebuild(config, runs[strategy])

    grid = runs["grid"]
    grid_eq = grid["equal_budget"].get("accuracy_pct")
    checks = {}
    for name in ("netadapt", "pareto"):
        run = runs[name]
        reach = _reach(run["progress"], QUALITY * (grid["accuracy_pct"] or float("inf")))
        share = reach / grid["measurements"] if reach is not None else None
        eq = run["equal_budget"].get("accuracy_pct")
        eq_share = eq / grid_eq if eq is not None and grid_eq else None
        checks[name] = {
            "measurements_to_reach_target": reach,
            "measurement_share_of_grid": share,
            "reached_within_cap": reach is not None,
            "target_met": bool(share is not None and share <= SHARE),
            "search_accuracy_share_of_grid": (run["accuracy_pct"] / grid["accuracy_pct"]
                                              if run["feasible"] and grid["feasible"]
                                              else None),
            "equal_budget_accuracy_share_of_grid": eq_share,
            "equal_budget_met": bool(eq_share is not None and eq_share >= QUALITY),
        }
    space_size = space.size
    path = write_results("search", {
        "bench": "search", "model": "digits-cnn", "device": "local",
        "space": space.to_mapping(), "space_points": space_size,
        "trial_cap": TRIAL_CAP,
        "budget": {"latency_p90_ratio": args.ratio, "max_accuracy_drop": args.max_drop},
        "bench_options": {"min_seconds": args.min_seconds},
        "target": f">= {QUALITY:.0%} of grid's best feasible accuracy with <= {SHARE:.0%} "
                  f"of grid's device measurements; cap {TRIAL_CAP} trials (fixed)",
        "runs": runs, "checks": checks,
    })
    print()
    print(f"{'strategy':<9} {'feasible':>8} {'acc %':>6} {'ft ep':>5} {'eq-budget %':>11} "
          f"{'measured':>8} {'trials':>6} {'new':>4} {'min':>5}")
    for name, run in runs.items():
        eq = run["equal_budget"].get("accuracy_pct")
        print(f"{name:<9} {str(run['feasible']):>8} {run['accuracy_pct'] or 0:>6.2f} "
              f"{run['finetune_epochs']:>5} {eq or 0:>11.2f} {run['measurements']:>8} "
              f"{run['trials']:>6} {run['new_measurements']:>4} {run['wall_s'] / 60:>5.1f}")
    for name, check in checks.items():
        reach = check["measurements_to_reach_target"]
        shown = (f"reached 99% of grid's best after {reach} measurements "
                 f"({check['measurement_share_of_grid']:.0%} of grid's)"
                 if reach is not None
                 else f"did not reach 99% of grid's best in {TRIAL_CAP} trials")
        print(f"{name}: {shown} -> {'met' if check['target_met'] else 'MISSED'}; "
              f"equal fine-tune budget: {check['equal_budget_accuracy_share_of_grid'] or 0:.2%} "
              f"of grid's -> {'met' if check['equal_budget_met'] else 'MISSED'}")
    print(f"written: {path}")
    ok = all(c["target_met"] and c["equal_budget_met"] for c in checks.values())
    return 0 if ok else 1


def _run(config: TuneConfig) -> dict[str, Any]:
    from toolkit.tune.runner import DB_FILE, run_tune
    from toolkit.tune.trialdb import TrialDB

    started = time.monotonic()
    result = run_tune(config, live=LiveView(0, stream=sys.stdout))
    wall = time.monotonic() - started
    best = result.best or {}
    trials = sorted(TrialDB(config.run_dir / DB_FILE).trials(), key=lambda t: t.number)
    progress, seen, top = [], set(), None
    for t in trials:  # in the order they ran: measurements used so far, best feasible so far
        if t.sha256:
            seen.add(t.sha256)
        if t.feasible and t.accuracy_pct is not None:
            top = max(top or 0.0, t.accuracy_pct)
        progress.append([len(seen), top])
    recipe = best.get("recipe") or []
    return {
        "run_id": config.run_id,
        "feasible": result.feasible,
        "message": result.message,
        "accuracy_pct": best.get("accuracy_pct"),
        "p90_ms": (best.get("worst") or {}).get("latency_p90_ms"),
        "best_recipe": recipe,
        "best_threads": best.get("threads"),
        "finetune_epochs": sum(s["finetune"].get("epochs", 2) for s in recipe
                               if "finetune" in s),
        "measurements": result.measurements,
        "new_measurements": result.new_measurements,
        "trials": result.trials,
        "stopped": result.stopped,
        "wall_s": round(wall, 1),
        "budgets": result.budgets,
        "progress": progress,
    }


def _reach(progress: list[list], bar: float) -> Optional[int]:
    """Measurements used when the best feasible accuracy first reached `bar` (None: never)."""
    for measured, top in progress:
        if top is not None and top >= bar:
            return measured
    return None


def equal_budget_recipe(recipe: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """The same architecture with one fine-tune of `epochs`: prune steps merged into one (later
    widths win), every fine-tune dropped, one fine-tune after the pruning, the rest kept."""
    prunes = [s["prune"] for s in recipe if "prune" in s]
    rest = [s for s in recipe if "prune" not in s and "finetune" not in s]
    if not prunes:
        return rest
    if len(prunes) == 1:
        merged = dict(prunes[0])
    else:
        keep: dict[str, int] = {}
        for p in prunes:
            if "keep" not in p:
                raise ValueError(f"cannot merge prune steps without `keep`: {prunes}")
            keep.update(p["keep"])
        merged = {k: v for k, v in prunes[-1].items() if k != "keep"} | {"keep": keep}
    return [{"prune": merged}, {"finetune": {"epochs": epochs}}, *rest]


def _rebuild(config: TuneConfig, run: dict[str, Any]) -> dict[str, Any]:
    """The winner rebuilt with the equal fine-tune budget, measured on a fresh local agent."""
    from toolkit.compress.pipeline import compress
    from toolkit.data import load_dataset
    from toolkit.evaluate import evaluate_on_device
    from toolkit.transport.local import local_agent

    if not run["feasible"]:
        return {"skipped": "no feasible winner"}
    recipe = equal_budget_recipe(run["best_recipe"], config.space.finetune_epochs)
    folder = Path(os.environ["EDGELOOP_HOME"]) / "equal-budget"
    data = load_dataset(config.data)
    started = time.monotonic()
    try:
        result = compress(config.model, recipe, data, folder, export=("tflite",),
                          seed=config.seed)
        tflite = result.artifacts["tflite"]
        options = replace(config.bench, threads=int(run["best_threads"] or 0))
        with local_agent(cache_dir=folder / "cache") as device:
            accuracy = evaluate_on_device(tflite, data, device).accuracy_pct
            p90 = device.benchmark(tflite, options).latency.p90_ms
    except Exception as exc:  # noqa: BLE001 - a failed rebuild is a result, not the end
        return {"recipe": recipe, "error": f"{type(exc).__name__}: {exc}"}
    limit = run["budgets"]["limits"]["local"]["latency_p90_ms"]
    return {
        "recipe": recipe, "finetune_epochs": config.space.finetune_epochs,
        "accuracy_pct": accuracy, "p90_ms": p90, "p90_limit_ms": limit,
        "within_latency_budget": p90 <= limit,
        "within_accuracy_budget": accuracy >= run["budgets"]["min_accuracy_pct"],
        "wall_s": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
