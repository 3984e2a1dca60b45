"""Metric checks of the gate: `--min-metric NAME=VALUE`, `--max-metric NAME=VALUE`, `--metric`.

Each becomes the check `metric.<name>` on every device: the metric (`toolkit.quality`) of the
device's own outputs over the data's test split, against its bound. A higher-is-better metric
takes a floor (`--min-metric psnr=30`), a lower-is-better one a ceiling (`--max-metric
perplexity=4.5`); `--metric NAME` alone reports the figure (a check that passes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from toolkit.errors import ConfigError
from toolkit.quality import HIGHER, LOWER, Metric, get_metric
from toolkit.validate.checks import Outcome

MIN, MAX, REPORT = "--min-metric", "--max-metric", "--metric"


@dataclass(frozen=True)
class MetricBound:
    """One metric option as given: `spec` (a name or `module:function`), its bound, which option.

    Raises:
        ConfigError: a bound that is not a finite number.
    """

    spec: str
    option: str
    bound: Optional[float] = None

    def __post_init__(self) -> None:
        if self.bound is not None and not math.isfinite(self.bound):
            raise ConfigError(f"validate: {self.option} {self.spec}: expected a finite number, "
                              f"got {self.bound!r}")


def parse_bound(text: str, option: str) -> MetricBound:
    """`psnr=30` (or `my/metrics.py:score=0.8`) -> MetricBound; the last `=` splits.

    Raises:
        ConfigError: no `=VALUE`, or a value that is not a number.
    """
    spec, sep, value = str(text).rpartition("=")
    if not sep or not spec.strip():
        raise ConfigError(f"validate: {option} {text!r}: expected NAME=VALUE, e.g. psnr=30")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"validate: {option} {text!r}: {value!r} is not a number") from None
    return MetricBound(spec.strip(), option, number)


@dataclass(frozen=True)
class MetricGate:
    """A resolved metric check: the metric, its bound (None: reported only), the option."""

    metric: Metric
    bound: Optional[float]
    option: str

    @property
    def check(self) -> str:
        """The check's name in reports and JUnit: `metric.<name>`."""
        return f"metric.{self.metric.name}"

    def outcome(self, value: float, n: int) -> Outcome:
        """The figure against the bound, in one line naming the metric, value and bound."""
        m, units = self.metric, self.metric.units
        shown = m.describe(value)
        if self.bound is None:
            return Outcome(True, f"{shown} over {n} samples ({m.direction} is better; "
                                 "reported, no bound)", value, None, units)
        ok = m.meets(value, self.bound)
        word = "floor" if m.direction == HIGHER else "ceiling"
        sign = (">=" if ok else "<") if m.direction == HIGHER else ("<=" if ok else ">")
        return Outcome(ok, f"{shown} {sign} {word} {self.bound:g}{' ' + units if units else ''} "
                           f"({self.option}) over {n} samples", value, self.bound, units)


def resolve_gates(bounds: Sequence[MetricBound], direction: Optional[str]) -> list[MetricGate]:
    """Metric gates for the options, checked against each metric's direction.

    A user's metric takes its direction from `direction` (`--metric-direction`), or else from
    the option (a floor means higher is better, a ceiling lower).

    Raises:
        ConfigError: an unknown metric, a floor on a lower-is-better metric (or a ceiling on
            a higher-is-better one), a metric given twice, a user metric without a direction.
    """
    gates: list[MetricGate] = []
    for b in bounds:
        implied = {MIN: HIGHER, MAX: LOWER}.get(b.option)
        metric = get_metric(b.spec, direction or (implied if ":" in b.spec else None))
        if implied and metric.direction != implied:
            other = MAX if b.option == MIN else MIN
            raise ConfigError(f"validate: {b.option} {b.spec}: {metric.name} is "
                              f"{metric.direction}-is-better; use {other} {b.spec}=VALUE")
        if any(g.metric.name == metric.name for g in gates):
            raise ConfigError(f"validate: metric {metric.name!r} is given twice")
        gates.append(MetricGate(metric, b.bound, b.option))
    return gates


def settings(gates: Sequence[MetricGate]) -> list[dict[str, Any]]:
    """The gates as the report's settings record them."""
    return [{**g.metric.to_json(), "bound": g.bound, "option": g.option} for g in gates]
