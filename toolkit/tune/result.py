"""The outcome of a tuning run: the chosen model, the Pareto front, and result.json.

`best` is the most accurate trial that meets every budget on every device. When none does,
`best` is the closest candidate, `feasible` is false, and `message` names the budget that
could not be met.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from toolkit.search.base import ACCURACY, CandidateKind, Trial, best_feasible
from toolkit.search.pareto_front import MAXIMIZE, MINIMIZE, pareto_front
from toolkit.tune.budgets import ResolvedBudgets

RESULT_FILE = "result.json"


@dataclass
class TuneResult:
    """What result.json holds (see the module docstring)."""

    run_id: str
    strategy: str
    model: str
    data: str
    devices: list[dict[str, Any]]
    budgets: dict[str, Any]
    feasible: bool
    message: str
    best: Optional[dict[str, Any]]
    base: Optional[dict[str, Any]]
    pareto: list[dict[str, Any]]
    trials: int  # trials run after the base
    measurements: int  # distinct device measurements the run used (cache hits included)
    new_measurements: int  # of those, measured by this run (not found in a cache)
    run_dir: str
    report: str = ""
    stopped: str = ""  # why the search ended early, if it did
    objectives: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> Path:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)
        return Path(path)


def trial_summary(trial: Trial, artifact: Optional[str] = None) -> dict[str, Any]:
    """A trial as result.json shows it: recipe, artifact, measured figures, feasibility."""
    return {
        "trial": trial.number,
        "kind": trial.candidate.kind.value,
        "note": trial.candidate.note,
        "recipe": trial.candidate.recipe,
        "threads": trial.candidate.threads,
        "params": {k: v for k, v in trial.candidate.params.items() if k not in ("chain",)},
        "artifact": artifact or trial.artifact,
        "sha256": trial.sha256,
        "accuracy_pct": trial.accuracy_pct,
        "accuracy_on": trial.accuracy_on,
        "figures": {label: asdict(f) for label, f in trial.figures.items()},
        "worst": trial.worst,
        "feasible": trial.feasible,
        "violations": [v.describe() for v in trial.violations],
        "status": trial.status.value,
        "error": trial.error,
    }


def front_objectives(budgets: ResolvedBudgets) -> list[str]:
    """Objectives of the front: accuracy, worst p90 latency, and every budgeted metric."""
    metrics = ["latency_p90_ms"] + [m for m in budgets.budgeted if m != "latency_p90_ms"]
    return [ACCURACY] + metrics


def judged_trials(history: Sequence[Trial]) -> list[Trial]:
    return [t for t in history if t.judged and t.candidate.kind != CandidateKind.PROBE]


def front(history: Sequence[Trial], objectives: Sequence[str]) -> list[Trial]:
    """The non-dominated judged trials over `objectives` (accuracy up, the rest down)."""
    usable = [t for t in judged_trials(history) if all(m in t.worst for m in objectives[1:])]
    points = [[t.accuracy_pct] + [t.worst[m] for m in objectives[1:]] for t in usable]
    senses = [MAXIMIZE] + [MINIMIZE] * (len(objectives) - 1)
    chosen = pareto_front(points, senses)
    return sorted((usable[i] for i in chosen), key=lambda t: t.worst.get("latency_p90_ms", 0.0))


def closest(history: Sequence[Trial]) -> Optional[Trial]:
    """The judged trial that misses its budgets by the least (sum of relative excess)."""
    candidates = judged_trials(history)
    if not candidates:
        return None
    return min(candidates, key=lambda t: (_excess(t), -(t.accuracy_pct or 0.0)))


def _excess(trial: Trial) -> float:
    total = 0.0
    for v in trial.violations:
        if v.value is None:
            total += 1.0
        elif v.metric == ACCURACY:
            total += (v.limit - v.value) / max(v.limit, 1e-9)
        else:
            total += v.value / v.limit - 1.0
    return total


def infeasible_message(history: Sequence[Trial], budgets: ResolvedBudgets) -> str:
    """Names the budgets no trial met (or, when each was met by some trial, those the closest
    candidate broke) and the closest candidate."""
    judged = judged_trials(history)
    if not judged:
        failed = [t for t in history if not t.ok]
        why = f": {failed[0].status.value}: {failed[0].error}" if failed else ""
        return f"no candidate could be built, measured and judged{why}"
    never = []
    for device, limits in budgets.limits.items():
        for metric, limit in limits.items():
            met = any(
                not any(v.metric == metric and v.device == device for v in t.violations)
                for t in judged
            )
            if not met:
                never.append(f"{metric} <= {limit:.4g} on {device}")
    if budgets.min_accuracy_pct is not None and not any(
        t.accuracy_pct >= budgets.min_accuracy_pct for t in judged
    ):
        never.append(f"accuracy >= {budgets.min_accuracy_pct:.2f}%")
    near = closest(history)
    broke = "; ".join(v.describe() for v in near.violations)
    if never:
        head = "no candidate met " + ", ".join(never)
    else:
        head = "no candidate met every budget at once"
    return (f"{head}; closest: trial {near.number} ({near.candidate.note or 'base model'}), "
            f"accuracy {near.accuracy_pct:.2f}%, {broke}")


def choose(history: Sequence[Trial], budgets: ResolvedBudgets) -> tuple[Optional[Trial], bool, str]:
    """(chosen trial, feasible, message)."""
    best = best_feasible(history)
    if best is not None:
        p90 = best.worst.get("latency_p90_ms")
        lat = f", worst p90 {p90:.4g} ms" if p90 is not None else ""
        return best, True, (f"trial {best.number} meets every budget: accuracy "
                            f"{best.accuracy_pct:.2f}%{lat}")
    return closest(history), False, infeasible_message(history, budgets)


def table_lines(history: Sequence[Trial], chosen: Optional[Trial], limit: int = 30) -> list[str]:
    """A plain-text table of the trials (probes left out), the chosen one marked."""
    rows = [t for t in history if t.candidate.kind != CandidateKind.PROBE][-limit:]
    lines = [f"{'':1} {'#':>3} {'accuracy':>8} {'p90 ms':>8} {'p50 ms':>8} {'mem MB':>7} "
             f"{'size KB':>8} {'ok':>3}  candidate"]
    for t in rows:
        w = t.worst
        lines.append(
            f"{'*' if chosen is not None and t.number == chosen.number else ' '} {t.number:>3} "
            f"{_num(t.accuracy_pct, '.2f'):>8} {_num(w.get('latency_p90_ms'), '.4f'):>8} "
            f"{_num(w.get('latency_p50_ms'), '.4f'):>8} {_num(w.get('memory_mb'), '.2f'):>7} "
            f"{_num(w.get('size_kb'), '.1f'):>8} {'yes' if t.feasible else 'no':>3}  "
            f"{t.candidate.note or t.candidate.kind.value}"
            + ("" if t.ok else f" [{t.status.value}]")
        )
    return lines


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)
