"""Outcomes of gate steps and the budget checks (latency p90, memory, energy, size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from toolkit.measurement import Measurement

# budget name -> (what is measured, unit)
BUDGETS = {
    "latency_p90_ms": ("p90 latency", "ms"),
    "memory_mb": ("peak memory", "MB"),
    "energy_mj": ("energy per inference", "mJ"),
    "size_kb": ("artifact size", "KiB"),
}


@dataclass(frozen=True)
class Outcome:
    """What one step found; `value` is handed to later steps (client, sha, measurement)."""

    passed: bool
    message: str
    measured: Optional[float] = None
    limit: Optional[float] = None
    unit: str = ""
    value: Any = None
    keep_value: bool = False  # hand `value` on even when the step failed
    detail: Optional[dict[str, Any]] = None  # JSON-ready figures kept in the report (A/B)


def not_run(reason: str) -> str:
    """The message of a check that could not run."""
    return f"not run: {reason}"


def within(what: str, measured: float, limit: float, unit: str) -> Outcome:
    """An upper-bound check with the margin in the message."""
    if measured <= limit:
        return Outcome(True, f"{what} {measured:.4g} {unit} <= budget {limit:g} {unit}",
                       measured, limit, unit)
    over = measured - limit
    return Outcome(False, f"{what} {measured:.4g} {unit} > budget {limit:g} {unit} "
                          f"(over by {over:.3g} {unit}, {100 * over / limit:.0f}%)",
                   measured, limit, unit)


def budget_outcome(name: str, limit: float, m: Optional[Measurement], prep: Any) -> Outcome:
    """Checks one budget of a profile against the measurement (or the artifact's size)."""
    what, unit = BUDGETS[name]
    if name == "size_kb":
        return within(what, prep.size_bytes / 1024.0, limit, unit)
    if m is None or not m.ok:
        reason = f"benchmark failed ({m.error_kind})" if m is not None else "no benchmark"
        return Outcome(False, not_run(reason), limit=limit, unit=unit)
    if name == "latency_p90_ms":
        assert m.latency is not None
        return within(what, m.latency.p90_ms, limit, unit)
    if name == "memory_mb":
        assert m.memory is not None
        return within(what, m.memory.peak_rss_mb, limit, unit)
    if m.power is None:
        return Outcome(False, "no power sensor was read on this device, so energy cannot be "
                              f"checked against the budget {limit:g} {unit}",
                       limit=limit, unit=unit)
    return within(what, m.power.energy_per_inference_mj, limit, unit)
