"""The search contract: strategies propose candidates from the history of measured trials.

A `Candidate` is a recipe applied to the base model plus how to run it (threads). The tune
runner turns each into a `Trial`: it builds the artifact, measures it on every device, judges
its accuracy and checks the budgets. A `Strategy` only reads trials and proposes more; it never
measures anything itself, so every figure it acts on is a stored, real measurement and a run
resumes by replaying the same proposals against the stored trials.
"""

from __future__ import annotations

import enum
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Optional

# Metrics a trial carries per device; the names are the budget names (unit in the name).
METRICS = ("latency_p90_ms", "latency_p50_ms", "memory_mb", "energy_mj", "size_kb")
ACCURACY = "accuracy_pct"


class CandidateKind(str, enum.Enum):
    """Why a candidate is run."""

    BASE = "base"  # the unmodified model: the reference for ratios and accuracy drop
    TRIAL = "trial"  # a full candidate: built, measured, accuracy judged
    PROBE = "probe"  # measured only (no accuracy): e.g. a NetAdapt lookup-table point
    FINAL = "final"  # the chosen candidate with a longer fine-tune


class TrialStatus(str, enum.Enum):
    """How a trial ended. A failure is a result the search ranks, not an exception."""

    OK = "ok"
    BUILD_FAILED = "build_failed"  # compression or export raised
    MEASURE_FAILED = "measure_failed"  # a device could not run or time it
    EVAL_FAILED = "eval_failed"  # accuracy could not be judged


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text (and hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class Candidate:
    """One point to try.

    Attributes:
        recipe: compression recipe as a list of one-key mappings, applied to the base model.
        threads: inference threads on the device (0: the runtime's default).
        params: the search-space point it came from (for tables and plots).
        kind: base, trial, probe or final.
        note: a short human description (e.g. "netadapt iteration 2: conv2").
    """

    recipe: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    threads: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    kind: CandidateKind = CandidateKind.TRIAL
    note: str = ""

    @property
    def recipe_key(self) -> str:
        """Digest of the recipe alone: candidates that differ only in threads share a build."""
        return hashlib.sha256(canonical_json(self.recipe).encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        """Digest of everything that decides the trial's outcome; the resume memo's key."""
        judged = self.kind != CandidateKind.PROBE
        text = canonical_json([self.recipe, self.threads, judged])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        return cls(
            recipe=list(data.get("recipe", [])),
            threads=int(data.get("threads", 0)),
            params=dict(data.get("params", {})),
            kind=CandidateKind(data.get("kind", "trial")),
            note=data.get("note", ""),
        )


@dataclass
class DeviceFigures:
    """What one device measured for one trial. Absent figures stay None, never invented.

    Attributes:
        device: the device's label (profile name, address, or "local").
        latency_p90_ms / latency_p50_ms: latency percentiles, milliseconds.
        memory_mb: peak RSS above the child's baseline, MB.
        energy_mj: energy per inference, millijoules; None without a power sensor.
        size_kb: model file size, KiB.
        error: why the measurement failed, empty when it did not.
    """

    device: str
    latency_p90_ms: Optional[float] = None
    latency_p50_ms: Optional[float] = None
    memory_mb: Optional[float] = None
    energy_mj: Optional[float] = None
    size_kb: Optional[float] = None
    error: str = ""

    def value(self, metric: str) -> Optional[float]:
        return getattr(self, metric)


@dataclass
class Violation:
    """A budget a trial broke: which metric, on which device, by how much."""

    metric: str
    device: str
    value: Optional[float]  # None: the device did not measure it
    limit: float

    def describe(self) -> str:
        """One line, e.g. "latency_p90_ms 0.213 > 0.15 on local"."""
        if self.value is None:
            return f"{self.metric} not measured on {self.device} (limit {self.limit:.4g})"
        if self.metric == ACCURACY:
            return f"{self.metric} {self.value:.4g} < {self.limit:.4g} (allowed drop)"
        return f"{self.metric} {self.value:.4g} > {self.limit:.4g} on {self.device}"


@dataclass
class Trial:
    """A candidate after the runner is done with it."""

    number: int
    candidate: Candidate
    status: TrialStatus = TrialStatus.OK
    error: str = ""
    artifact: str = ""
    sha256: str = ""
    accuracy_pct: Optional[float] = None
    accuracy_on: str = ""
    figures: dict[str, DeviceFigures] = field(default_factory=dict)
    worst: dict[str, float] = field(default_factory=dict)  # metric -> worst over devices
    usage: dict[str, float] = field(default_factory=dict)  # metric -> worst value/limit
    feasible: bool = False
    violations: list[Violation] = field(default_factory=list)
    new_measurements: int = 0  # device measurements this trial caused (cache misses)
    elapsed_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)  # e.g. {"widths": {layer: channels}}

    @property
    def ok(self) -> bool:
        return self.status == TrialStatus.OK

    @property
    def judged(self) -> bool:
        """True for trials whose accuracy was judged (not probes), and that succeeded."""
        return self.ok and self.accuracy_pct is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidate"] = self.candidate.to_json()
        data["status"] = self.status.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trial:
        values = dict(data)
        values["candidate"] = Candidate.from_json(data["candidate"])
        values["status"] = TrialStatus(data["status"])
        values["figures"] = {k: DeviceFigures(**v) for k, v in data.get("figures", {}).items()}
        values["violations"] = [Violation(**v) for v in data.get("violations", [])]
        return cls(**values)


@dataclass(frozen=True)
class Goal:
    """What the search aims at, after budgets are resolved against the base model.

    Attributes:
        budgeted: metrics with a limit on at least one device.
        primary: the metric NetAdapt reduces (latency first when it has a budget).
        min_accuracy_pct: lowest acceptable accuracy, percent; None: no limit.
    """

    budgeted: tuple[str, ...] = ()
    primary: Optional[str] = None
    min_accuracy_pct: Optional[float] = None


def best_feasible(history: Sequence[Trial]) -> Optional[Trial]:
    """The most accurate feasible trial (ties: the lower worst-case primary usage)."""
    feasible = [t for t in history if t.feasible and t.judged]
    if not feasible:
        return None
    return max(feasible, key=lambda t: (t.accuracy_pct, -max(t.usage.values(), default=0.0)))


class Strategy(ABC):
    """Proposes candidates from the trials so far.

    Subclasses must be deterministic given the history and the seed: a resumed run replays
    their proposals and the runner answers the stored ones without measuring again.

    Args:
        space: the search space.
        goal: budgets and accuracy limit, resolved.
        max_trials: most trials to propose, the base excluded.
        seed: seed for anything random.
    """

    name: ClassVar[str]

    def __init__(self, space: Any, goal: Goal, max_trials: int, seed: int = 0) -> None:
        self.space = space
        self.goal = goal
        self.max_trials = max_trials
        self.seed = seed

    @abstractmethod
    def ask(self, history: Sequence[Trial]) -> list[Candidate]:
        """Returns the next candidates to run, in order; an empty list when the search is done.

        Args:
            history: every trial so far, the base first, in the order they were run.
        """

    def remaining(self, history: Sequence[Trial]) -> int:
        """Trials still allowed by `max_trials`."""
        used = sum(1 for t in history if t.candidate.kind != CandidateKind.BASE)
        return max(0, self.max_trials - used)
