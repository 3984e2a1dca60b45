"""The live view of a tuning run: trial n/N, the best feasible so far, which budgets hold.

On a terminal it is one line rewritten in place while a trial runs, and one finished line per
trial; elsewhere (a log file, CI) plain lines, one per trial, nothing rewritten.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Optional, TextIO

from toolkit.search.base import Candidate, CandidateKind, Trial, best_feasible


class LiveView:
    """Reports a run's progress.

    Args:
        total: the trial cap (N in "trial n/N").
        budgets: the budget names checked (shown as held or not per trial).
        stream: where to write (default stderr).
        enabled: False writes nothing (for --json).
    """

    def __init__(self, total: int, budgets: Sequence[str] = (), stream: Optional[TextIO] = None,
                 enabled: bool = True) -> None:
        self.total = total
        self.budgets = tuple(budgets)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()

    def message(self, text: str) -> None:
        """A line of its own (e.g. "measuring the base model on 2 devices")."""
        if self.enabled:
            self._clear()
            self.stream.write(text + "\n")
            self.stream.flush()

    def running(self, number: int, candidate: Candidate, stage: str) -> None:
        """The in-place line while a trial runs (terminal only)."""
        if self.tty:
            self._clear()
            self.stream.write(f"{self._head(number)} {stage}: {_describe(candidate)}"[:_width()])
            self.stream.flush()

    def finished(self, trial: Trial, history: Sequence[Trial], stored: bool = False) -> None:
        """One line for a finished trial, with the best feasible trial so far."""
        if not self.enabled:
            return
        best = best_feasible(history)
        held = " ".join(f"{b}{_mark(trial, b)}" for b in self.budgets)
        text = (f"{self._head(trial.number)} {_describe(trial.candidate)} | {_figures(trial)}"
                f"{' | ' + held if held and trial.ok else ''}"
                f" | best: {_short(best) if best else 'none feasible yet'}"
                f"{' (stored)' if stored else ''}")
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _head(self, number: int) -> str:
        elapsed = time.monotonic() - self.started
        return f"[{elapsed:6.1f}s] trial {number}/{self.total}"

    def _clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")


def _describe(candidate: Candidate) -> str:
    if candidate.kind == CandidateKind.BASE:
        return "base model"
    if candidate.note:
        return candidate.note
    shown = {k: v for k, v in candidate.params.items() if v not in (None, 0, 0.0)}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "no compression"


def _figures(trial: Trial) -> str:
    if not trial.ok:
        return f"{trial.status.value}: {trial.error[:80]}"
    parts = []
    if trial.accuracy_pct is not None:
        parts.append(f"acc {trial.accuracy_pct:.2f}%")
    if "latency_p90_ms" in trial.worst:
        parts.append(f"p90 {trial.worst['latency_p90_ms']:.4g} ms")
    if "memory_mb" in trial.worst:
        parts.append(f"mem {trial.worst['memory_mb']:.3g} MB")
    if "energy_mj" in trial.worst:
        parts.append(f"{trial.worst['energy_mj']:.3g} mJ")
    parts.append("feasible" if trial.feasible else "infeasible")
    return " ".join(parts)


def _mark(trial: Trial, budget: str) -> str:
    broken = any(v.metric == budget for v in trial.violations)
    return " no" if broken else " ok"


def _short(trial: Trial) -> str:
    p90 = trial.worst.get("latency_p90_ms")
    lat = f", p90 {p90:.4g} ms" if p90 is not None else ""
    return f"#{trial.number} {trial.accuracy_pct:.2f}%{lat}"


def _width() -> int:
    import shutil

    return max(40, shutil.get_terminal_size((120, 20)).columns - 1)
