"""What the gate found: one CheckResult per device and check, grouped per device and run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from toolkit.measurement import Measurement


@dataclass(frozen=True)
class CheckResult:
    """One check on one device.

    Attributes:
        device: Profile name.
        check: "connect", "push", "benchmark", "budget.<name>", "parity" or "accuracy".
        passed: Whether it held. A check that could not run (device unreachable, an earlier
            step failed) did not pass; `message` says why. Nothing is ever skipped.
        message: One line: what was measured against what, or the reason it failed.
        measured: The figure checked (unit in `unit`), when there is one.
        limit: The bound it was checked against, when there is one.
        unit: Unit of `measured` and `limit` ("ms", "MB", "mJ", "KiB", "%", "abs").
        duration_s: Wall time of the check.
        detail: JSON-ready figures behind the check, when it has more than one (the
            regression check's ratio, interval and per-round p50s).
    """

    device: str
    check: str
    passed: bool
    message: str
    measured: Optional[float] = None
    limit: Optional[float] = None
    unit: str = ""
    duration_s: float = 0.0
    detail: Optional[dict[str, Any]] = None

    @property
    def margin(self) -> Optional[float]:
        """How far the figure is from its bound (positive: over an upper bound)."""
        if self.measured is None or self.limit is None:
            return None
        return self.measured - self.limit


@dataclass(frozen=True)
class DeviceReport:
    """Everything the gate did on one device."""

    device: str
    address: str
    checks: tuple[CheckResult, ...]
    measurement: Optional[Measurement] = None
    hostname: str = ""
    runtime: str = ""
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class GateReport:
    """One validation run of one artifact over a fleet."""

    artifact: str
    artifact_sha256: str
    artifact_size_bytes: int
    fleet: str
    precision: str
    devices: tuple[DeviceReport, ...]
    started_unix: float
    duration_s: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.devices)

    @property
    def checks(self) -> list[CheckResult]:
        return [c for d in self.devices for c in d.checks]

    def to_json(self) -> dict[str, Any]:
        """Nested, JSON-ready; measurements keep their raw samples."""
        out = asdict(self)
        out["passed"] = self.passed
        for raw, device in zip(out["devices"], self.devices):
            raw["passed"] = device.passed
        return out
