"""The end of a run: choose, copy the chosen artifact, write result.json and report.html."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from toolkit.search.base import Trial
from toolkit.tune.budgets import ResolvedBudgets
from toolkit.tune.result import (
    RESULT_FILE,
    TuneResult,
    choose,
    front,
    front_objectives,
    trial_summary,
)

REPORT_FILE = "report.html"


def finish(session: Any, history: Sequence[Trial], budgets: ResolvedBudgets,
           stopped: str) -> TuneResult:
    """Writes the run's outputs into its folder and returns the result.

    Args:
        session: the runner's session (config, database, devices, measurer).
        history: every trial, the base first.
        budgets: the resolved budgets.
        stopped: why the search ended early ("" when it ran out of proposals).
    """
    config, run_dir = session.config, session.config.run_dir
    chosen, feasible, message = choose(history, budgets)
    artifact = _copy_chosen(chosen, run_dir, config.model) if chosen else None
    objectives = front_objectives(budgets)
    pareto = front(history, objectives)
    base = history[0]
    result = TuneResult(
        run_id=config.run_id,
        strategy=config.strategy,
        model=config.model,
        data=config.data,
        devices=[_device(d) for d in session.devices],
        budgets=budgets.to_json(),
        feasible=feasible,
        message=message,
        best=trial_summary(chosen, artifact) if chosen else None,
        base=trial_summary(base),
        pareto=[trial_summary(t) for t in pareto],
        trials=len(history) - 1,
        measurements=_distinct_measurements(session, history),
        new_measurements=sum(t.new_measurements for t in history),
        run_dir=str(run_dir),
        report=str(run_dir / REPORT_FILE),
        stopped=stopped,
        objectives=objectives,
    )
    result.write(run_dir / RESULT_FILE)
    from toolkit.tune.report import write_report

    samples = _samples(session, base, "base")
    if chosen is not None and chosen.number != base.number:
        samples.update(_samples(session, chosen, f"chosen #{chosen.number}"))
    ops = _ops(session, base, "base")
    if chosen is not None and chosen.number != base.number:
        ops.update(_ops(session, chosen, f"chosen #{chosen.number}"))
    write_report(run_dir / REPORT_FILE, result, history, budgets, pareto, samples, ops)
    return result


def _copy_chosen(trial: Trial, run_dir: Path, model: str) -> Optional[str]:
    source = Path(trial.artifact)
    if not source.is_file():
        return None
    target_dir = run_dir / "chosen"
    target_dir.mkdir(parents=True, exist_ok=True)
    for old in target_dir.iterdir():
        old.unlink()
    name = Path(model).stem.replace(":", "_") or "model"
    target = target_dir / f"{name}-trial{trial.number}{source.suffix}"
    shutil.copyfile(source, target)
    return str(target)


def _device(device: Any) -> dict[str, Any]:
    info = device.client.info()
    return {"label": device.label, "device_id": device.device_id, "hostname": info.hostname,
            "arch": info.arch, "cpu_model": info.cpu_model, "cpu_cores": info.cpu_cores}


def _keys(session: Any, trial: Trial) -> list[tuple[Any, str, str]]:
    measurer = session.measurer
    return [(d, trial.sha256, measurer.options(d, trial.candidate.threads).key())
            for d in session.devices]


def _distinct_measurements(session: Any, history: Sequence[Trial]) -> int:
    """Distinct (device, artifact, options) measurements the trials rest on."""
    seen = set()
    for trial in history:
        if trial.sha256 and trial.figures:
            seen.update((d.device_id, sha, key) for d, sha, key in _keys(session, trial))
    return len(seen)


def _samples(session: Any, trial: Trial, name: str) -> dict[str, list[float]]:
    out = {}
    for device, sha, key in _keys(session, trial):
        m = session.db.measurement(device.device_id, sha, key)
        if m is not None and m.latency is not None:
            out[f"{name}\non {device.label}"] = list(m.latency.samples_ms)
    return out


def _ops(session: Any, trial: Trial, name: str) -> dict[str, Any]:
    """The trial's measurements that carry a per-operator profile (options.per_op)."""
    out = {}
    for device, sha, key in _keys(session, trial):
        m = session.db.measurement(device.device_id, sha, key)
        if m is not None and m.ops:
            out[f"{name} on {device.label}"] = m
    return out
