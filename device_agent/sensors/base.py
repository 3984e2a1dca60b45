"""The power-sensor contract: one small class per sensor, registered by name.

A sensor reads instantaneous board/package power in watts. Some (NVML, RAPL) also
expose a cumulative energy counter, which is more accurate than integrating samples;
those implement `read_energy_j`. A sensor that cannot be read on this device says so
through `availability()` and is never used: no reading means no power fields.

Sensors read sysfs under a root that defaults to "/" and is overridden by the
environment variable `EDGELOOP_SYSFS_ROOT` (see `_sysfs.py`), so their parsing can be
exercised against a directory tree with the real file layout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Optional


class SensorError(RuntimeError):
    """A sensor could not be opened or read; the message names the sensor and the file/command."""


class UnknownSensorError(SensorError, ValueError):
    """A sensor name that no registered sensor has; the message lists the known names."""


class SensorUnavailableError(SensorError, LookupError):
    """A sensor that was asked for by name cannot be used on this device; the message says why."""


@dataclass(frozen=True)
class Availability:
    """Whether a sensor (or runtime) can be used here, and why not."""

    available: bool
    reason: str = ""
    detail: str = ""


class PowerSensor(ABC):
    """A source of power readings on this device.

    Subclasses set `name` and `default_rate_hz` and implement `availability` and
    `read_watts`. They must not import optional modules at import time.
    """

    name: ClassVar[str]
    default_rate_hz: ClassVar[float] = 10.0

    @classmethod
    @abstractmethod
    def availability(cls) -> Availability:
        """Says whether this sensor can be read on this device (cheap, no side effects)."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquires handles before sampling; the default does nothing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases handles after sampling; the default does nothing."""

    @abstractmethod
    def read_watts(self) -> float:
        """Returns the instantaneous power in watts."""

    def read_energy_j(self) -> Optional[float]:
        """Returns a cumulative energy counter in joules, or None when the sensor has none."""
        return None

    def __enter__(self) -> PowerSensor:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
