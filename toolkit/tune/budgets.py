"""Budgets: what the user asked, resolved per device against the base model, and the check.

Where a limit comes from, per device and metric (the stricter wins when several apply):
    - the device profile's `budgets` (the default);
    - `--budget latency_p90_ms=8` replaces the profile's value on every device;
    - `--budget-ratio latency_p90=0.7` is 70% of the base model's value measured on that
      device at the start of the run.
A candidate is feasible when every limit holds on every device (the worst case decides) and
its accuracy is at most `max_accuracy_drop` points below the base model's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from toolkit.devices.profile import Budgets, DeviceProfile
from toolkit.errors import ConfigError
from toolkit.search.base import ACCURACY, METRICS, DeviceFigures, Goal, Violation

BUDGET_NAMES = tuple(f.name for f in fields(Budgets))
ALIASES = {"latency_p90": "latency_p90_ms", "memory": "memory_mb", "energy": "energy_mj",
           "size": "size_kb"}


def parse_assignments(values: Iterable[str], option: str) -> dict[str, float]:
    """Parses `NAME=NUMBER` items (e.g. from repeated `--budget`) into {budget name: value}.

    Names are the budget names (`latency_p90_ms`, `memory_mb`, `energy_mj`, `size_kb`) or
    their short forms (`latency_p90`, `memory`, `energy`, `size`).

    Raises:
        ConfigError: naming the option and the item when a name or number is wrong.
    """
    parsed: dict[str, float] = {}
    for item in values:
        name, sep, text = item.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if not sep or name not in BUDGET_NAMES:
            names = ", ".join(BUDGET_NAMES)
            raise ConfigError(f"{option} {item!r}: expected NAME=NUMBER with NAME one of {names}")
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{option} {item!r}: expected a number after '='") from None
        if not value > 0:
            raise ConfigError(f"{option} {item!r}: expected a number > 0")
        parsed[name] = value
    return parsed


@dataclass(frozen=True)
class BudgetRequest:
    """The budgets as the user gave them (before the base model is measured).

    Attributes:
        absolute: {budget name: limit} applied to every device (units in the names).
        ratios: {budget name: fraction of the base model's value on each device}.
        max_accuracy_drop: most accuracy points the result may lose; None: no limit.
    """

    absolute: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    max_accuracy_drop: Optional[float] = None

    def __post_init__(self) -> None:
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise ConfigError(
                f"--max-accuracy-drop: expected a number >= 0, got {self.max_accuracy_drop}"
            )

    def to_json(self) -> dict[str, Any]:
        return {"absolute": self.absolute, "ratios": self.ratios,
                "max_accuracy_drop": self.max_accuracy_drop}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> BudgetRequest:
        return cls(dict(raw.get("absolute", {})), dict(raw.get("ratios", {})),
                   raw.get("max_accuracy_drop"))


@dataclass(frozen=True)
class Verdict:
    """A trial checked against the budgets."""

    feasible: bool
    violations: list[Violation]
    usage: dict[str, float]  # budgeted metric -> worst value/limit over devices
    worst: dict[str, float]  # metric -> worst value over devices


@dataclass(frozen=True)
class ResolvedBudgets:
    """Limits per device, fixed for the run once the base model is measured.

    Attributes:
        limits: {device label: {budget name: limit}}.
        sources: {device label: {budget name: where the limit came from}}.
        base_accuracy_pct: the base model's accuracy, percent.
        min_accuracy_pct: lowest acceptable accuracy, percent; None: no limit.
    """

    limits: dict[str, dict[str, float]]
    sources: dict[str, dict[str, str]]
    base_accuracy_pct: Optional[float] = None
    min_accuracy_pct: Optional[float] = None

    @property
    def budgeted(self) -> tuple[str, ...]:
        names = {m for per_device in self.limits.values() for m in per_device}
        return tuple(m for m in BUDGET_NAMES if m in names)

    def goal(self) -> Goal:
        budgeted = self.budgeted
        primary = "latency_p90_ms" if "latency_p90_ms" in budgeted else next(iter(budgeted), None)
        return Goal(budgeted=budgeted, primary=primary, min_accuracy_pct=self.min_accuracy_pct)

    def check(self, figures: Mapping[str, DeviceFigures], accuracy: Optional[float]) -> Verdict:
        """Checks one trial's figures (by device label) and accuracy against every limit."""
        worst: dict[str, float] = {}
        for metric in METRICS:
            values = [f.value(metric) for f in figures.values() if f.value(metric) is not None]
            if values:
                worst[metric] = max(values)
        violations: list[Violation] = []
        usage: dict[str, float] = {}
        for device, limits in self.limits.items():
            measured = figures.get(device)
            for metric, limit in limits.items():
                value = measured.value(metric) if measured is not None else None
                if value is None:
                    violations.append(Violation(metric, device, None, limit))
                    continue
                usage[metric] = max(usage.get(metric, 0.0), value / limit)
                if value > limit:
                    violations.append(Violation(metric, device, value, limit))
        if self.min_accuracy_pct is not None and accuracy is not None:
            if accuracy < self.min_accuracy_pct:
                violations.append(Violation(ACCURACY, "", accuracy, self.min_accuracy_pct))
        ok = all(not f.error for f in figures.values()) and bool(figures)
        return Verdict(ok and not violations and accuracy is not None, violations, usage, worst)

    def describe(self) -> list[str]:
        """One line per device: its limits and their sources."""
        lines = []
        for device, limits in self.limits.items():
            parts = [f"{m} <= {v:.4g} ({self.sources[device][m]})" for m, v in limits.items()]
            lines.append(f"{device}: " + (", ".join(parts) if parts else "no budget"))
        if self.min_accuracy_pct is not None:
            lines.append(f"accuracy >= {self.min_accuracy_pct:.2f}%")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"limits": self.limits, "sources": self.sources,
                "base_accuracy_pct": self.base_accuracy_pct,
                "min_accuracy_pct": self.min_accuracy_pct}


def resolve_budgets(
    request: BudgetRequest,
    profiles: Mapping[str, DeviceProfile],
    base_figures: Mapping[str, DeviceFigures],
    base_accuracy_pct: Optional[float],
) -> ResolvedBudgets:
    """Turns the request into per-device limits using the base model's measurements.

    Args:
        request: what the user asked.
        profiles: {device label: profile} (a profile's budgets are the defaults).
        base_figures: {device label: the base model's figures on it}.
        base_accuracy_pct: the base model's accuracy, percent.

    Raises:
        ConfigError: a ratio names a metric the base model was not measured with on a device.
    """
    limits: dict[str, dict[str, float]] = {}
    sources: dict[str, dict[str, str]] = {}
    for device, profile in profiles.items():
        mine = {m: v for m, v in profile.budgets.items()}
        where = {m: f"profile {profile.name}" for m in mine}
        for metric, value in request.absolute.items():
            mine[metric], where[metric] = value, "--budget"
        for metric, ratio in request.ratios.items():
            base_value = base_figures[device].value(metric) if device in base_figures else None
            if base_value is None:
                raise ConfigError(
                    f"--budget-ratio {metric}={ratio:g}: the base model has no {metric} "
                    f"measured on device {device}"
                )
            value = base_value * ratio
            if metric not in mine or value < mine[metric]:
                mine[metric] = value
                where[metric] = f"{ratio:g} x base {base_value:.4g}"
        limits[device], sources[device] = mine, where
    min_acc = None
    if request.max_accuracy_drop is not None and base_accuracy_pct is not None:
        min_acc = base_accuracy_pct - request.max_accuracy_drop
    return ResolvedBudgets(limits, sources, base_accuracy_pct, min_acc)
