"""Statistics over repeated measurements: spread of repeated runs, A/B with confidence."""

from toolkit.stats.ab import ABComparison, Verdict, compare_rounds, interleaved_order
from toolkit.stats.repeat import Spread

__all__ = ["ABComparison", "Spread", "Verdict", "compare_rounds", "interleaved_order"]
