"""Repeatability: N independent runs of one benchmark, their median p50 and their spread."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Spread:
    """How N independent runs' p50s (ms) agree.

    Attributes:
        p50s_ms: each run's p50, in run order.
        median_p50_ms: the median of the runs' p50s (the figure to quote).
        min_p50_ms, max_p50_ms: the range.
        relative_spread: (max - min) / median; 0.02 reads "the runs agree within 2%".
    """

    p50s_ms: tuple[float, ...]
    median_p50_ms: float
    min_p50_ms: float
    max_p50_ms: float
    relative_spread: float

    @classmethod
    def from_p50s(cls, p50s_ms: Sequence[float]) -> Spread:
        """Raises ValueError for no runs."""
        if not p50s_ms:
            raise ValueError("no runs to summarise")
        values = tuple(float(x) for x in p50s_ms)
        median = statistics.median(values)
        low, high = min(values), max(values)
        return cls(values, median, low, high, (high - low) / median if median > 0 else 0.0)

    @property
    def runs(self) -> int:
        return len(self.p50s_ms)

    def describe(self) -> str:
        """One line: "median p50 1.23 ms over 5 runs, range 1.21-1.26 ms (spread 4.1%)"."""
        return (f"median p50 {self.median_p50_ms:.4g} ms over {self.runs} runs, range "
                f"{self.min_p50_ms:.4g}-{self.max_p50_ms:.4g} ms "
                f"(spread {self.relative_spread:.1%})")

    def to_json(self) -> dict:
        return {**asdict(self), "runs": self.runs}
