"""Intel/AMD CPU package power through RAPL powercap counters.

Layout read (under the sysfs root): `sys/class/powercap/intel-rapl:N/` for each package
domain N (`name` starts with "package"; sub-domains `intel-rapl:N:M` and the platform
domain "psys" are skipped so nothing is counted twice), each with `energy_uj` (a counter in
microjoules) and `max_energy_range_uj` (where the counter wraps back to 0). AMD CPUs expose
the same layout through the same driver.

`read_energy_j` sums the package counters, accumulating across wrap-arounds since the
sensor was opened. `read_watts` divides the energy difference between consecutive reads by
the time between them (the sampler's period), or over a short interval of its own when
there is no recent read. Recent kernels make `energy_uj` readable by root only.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from device_agent.sensors._sysfs import read_int, read_str, sys_glob, sys_path, try_read_str
from device_agent.sensors.base import Availability, PowerSensor, SensorError

POWERCAP_GLOB = "sys/class/powercap/intel-rapl:*"
_PACKAGE_DIR = re.compile(r"^intel-rapl:\d+$")

#: Reads closer together than this (s) wait, because the counter updates about every ms.
MIN_INTERVAL_S = 0.01
#: With no read in this long (s), `read_watts` measures over `SHORT_INTERVAL_S` instead.
STALE_AFTER_S = 2.0
SHORT_INTERVAL_S = 0.05


@dataclass
class _Domain:
    """One package counter with its wrap-around bookkeeping (all in µJ)."""

    path: Path
    label: str
    max_range_uj: int
    last_raw_uj: Optional[int] = None
    total_uj: int = 0

    def read_total_uj(self) -> int:
        raw = read_int(self.path / "energy_uj")
        if self.last_raw_uj is None:
            self.total_uj = raw
        elif raw >= self.last_raw_uj:
            self.total_uj += raw - self.last_raw_uj
        else:  # the counter wrapped past max_energy_range_uj back to 0
            self.total_uj += raw + self.max_range_uj - self.last_raw_uj
        self.last_raw_uj = raw
        return self.total_uj


def _package_dirs() -> list[Path]:
    dirs = [p for p in sys_glob(POWERCAP_GLOB) if _PACKAGE_DIR.match(p.name)]
    return [p for p in dirs if (try_read_str(p / "name") or "").startswith("package")]


def _discover() -> list[_Domain]:
    """Returns the readable package domains.

    Raises:
        SensorError: no package domain exists, or one cannot be read (names the file).
    """
    dirs = _package_dirs()
    if not dirs:
        raise SensorError(
            f"rapl: no package domain in {sys_path('sys/class/powercap')} "
            "(expected intel-rapl:N with name package-N)"
        )
    domains = []
    for path in dirs:
        try:
            label = read_str(path / "name")
            max_range = read_int(path / "max_energy_range_uj")
            read_int(path / "energy_uj")
        except PermissionError as exc:
            raise SensorError(
                f"rapl: {exc.filename} is not readable (permission denied; run the agent as "
                "root or grant read access to energy_uj)"
            ) from exc
        except (OSError, ValueError) as exc:
            raise SensorError(f"rapl: cannot read {path}: {exc}") from exc
        if max_range <= 0:
            raise SensorError(f"rapl: {path / 'max_energy_range_uj'} is {max_range}, expected > 0")
        domains.append(_Domain(path=path, label=label, max_range_uj=max_range))
    return domains


class RaplSensor(PowerSensor):
    """Summed CPU package power (W) and energy (J) from RAPL powercap counters."""

    name = "rapl"
    default_rate_hz = 10.0

    def __init__(self) -> None:
        self._domains: list[_Domain] = []
        self._last: Optional[tuple[float, float]] = None  # (monotonic s, energy J)
        self._lock = threading.Lock()

    @classmethod
    def availability(cls) -> Availability:
        """Says whether package counters exist and are readable; detail lists the domains."""
        try:
            domains = _discover()
        except SensorError as exc:
            return Availability(False, str(exc))
        labels = ", ".join(f"{d.label} ({d.path.name})" for d in domains)
        return Availability(True, detail=f"energy_uj of {labels}")

    def open(self) -> None:
        """Finds the package domains and starts wrap-around tracking from their counters.

        Raises:
            SensorError: no readable package domain.
        """
        with self._lock:
            if not self._domains:
                self._domains = _discover()
                self._last = None

    def close(self) -> None:
        """Forgets the domains and the wrap-around state."""
        with self._lock:
            self._domains = []
            self._last = None

    def read_energy_j(self) -> Optional[float]:
        """Returns the summed package energy in joules, counting wrap-arounds since open.

        Wraps are seen only if the counter is read at least once per wrap period (tens of
        minutes at full load); the sampler reads it every period.

        Raises:
            SensorError: a counter could not be read.
        """
        if not self._domains:
            self.open()
        with self._lock:
            return self._read_energy_locked()

    def read_watts(self) -> float:
        """Returns the mean package power in watts since the previous read.

        With no previous read within `STALE_AFTER_S`, it measures over `SHORT_INTERVAL_S`.

        Raises:
            SensorError: a counter could not be read.
        """
        if not self._domains:
            self.open()
        with self._lock:
            now, energy = time.monotonic(), self._read_energy_locked()
            previous = self._last
            if previous is None or now - previous[0] > STALE_AFTER_S:
                previous = (now, energy)
                time.sleep(SHORT_INTERVAL_S)
                now, energy = time.monotonic(), self._read_energy_locked()
            elif now - previous[0] < MIN_INTERVAL_S:
                time.sleep(MIN_INTERVAL_S - (now - previous[0]))
                now, energy = time.monotonic(), self._read_energy_locked()
            self._last = (now, energy)
        return (energy - previous[1]) / (now - previous[0])

    def _read_energy_locked(self) -> float:
        try:
            return sum(d.read_total_uj() for d in self._domains) / 1e6
        except (OSError, ValueError) as exc:
            raise SensorError(f"rapl: cannot read energy_uj: {exc}") from exc
