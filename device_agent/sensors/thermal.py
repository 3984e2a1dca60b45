"""CPU frequency and temperature, read right before and after the timed window: throttling and
temperature rise.

Layout read (under the sysfs root, see `_sysfs.py`):

- `sys/devices/system/cpu/cpuN/cpufreq/scaling_cur_freq` and `cpuinfo_max_freq` (kHz);
- `sys/class/thermal/thermal_zoneN/temp` (millidegrees Celsius), `type`, and
  `trip_point_K_type` / `trip_point_K_temp` (m°C).

Every field is None when nothing readable backs it: never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from device_agent.sensors._sysfs import sys_glob, try_read_int, try_read_str

CPUFREQ_GLOB = "sys/devices/system/cpu/cpu[0-9]*/cpufreq"
ZONE_GLOB = "sys/class/thermal/thermal_zone[0-9]*"
#: Zone types (substrings, lower case) that measure the CPU or the SoC it sits on.
CPU_ZONE_HINTS = ("cpu", "soc", "x86_pkg_temp", "acpitz")
#: Trip point types at which the kernel starts throttling (or worse).
THROTTLE_TRIP_TYPES = ("passive", "hot", "critical")
#: Readings outside this range (°C) are driver errors, not temperatures; they are dropped.
PLAUSIBLE_C = (-60.0, 200.0)
#: A frequency drop larger than this fraction counts as throttling.
FREQ_DROP_FRACTION = 0.10
#: A temperature rise across the timed window above this (°C) is flagged in the result.
TEMPERATURE_RISE_FLAG_C = 5.0


@dataclass(frozen=True)
class ThermalReading:
    """CPU state at one moment.

    Attributes:
        cpu_freq_mhz: mean current frequency over the cores, MHz; None if unreadable.
        temperature_c: hottest CPU/SoC zone (else hottest zone), °C; None if unreadable.
        at_trip_point: True when one of those zones is at or above its lowest throttling
            trip point; None when no trip point is readable.
    """

    cpu_freq_mhz: Optional[float]
    temperature_c: Optional[float]
    at_trip_point: Optional[bool] = None


def _khz_files_mhz(name: str) -> list[float]:
    values = (try_read_int(d / name) for d in sys_glob(CPUFREQ_GLOB))
    return [v / 1000.0 for v in values if v is not None and v > 0]


def max_cpu_freq_mhz() -> Optional[float]:
    """Returns the highest `cpuinfo_max_freq` over the cores in MHz, or None if unreadable."""
    values = _khz_files_mhz("cpuinfo_max_freq")
    return max(values) if values else None


def _celsius(path: Path) -> Optional[float]:
    milli = try_read_int(path)
    if milli is None:
        return None
    value = milli / 1000.0
    return value if PLAUSIBLE_C[0] < value < PLAUSIBLE_C[1] else None


def _lowest_trip_c(zone: Path) -> Optional[float]:
    trips = []
    for type_file in zone.glob("trip_point_*_type"):
        if (try_read_str(type_file) or "").lower() in THROTTLE_TRIP_TYPES:
            temp = _celsius(zone / type_file.name.replace("_type", "_temp"))
            if temp is not None and temp > 0:
                trips.append(temp)
    return min(trips) if trips else None


def _zone_readings() -> list[tuple[str, float, Optional[float]]]:
    """Returns (type, °C, lowest throttling trip °C) for each readable zone."""
    zones = []
    for zone in sys_glob(ZONE_GLOB):
        temp = _celsius(zone / "temp")
        if temp is not None:
            zones.append(((try_read_str(zone / "type") or "").lower(), temp, _lowest_trip_c(zone)))
    return zones


def read_thermal() -> ThermalReading:
    """Returns the CPU frequency and temperature now; fields are None where unreadable."""
    freqs = _khz_files_mhz("scaling_cur_freq")
    zones = _zone_readings()
    cpu_zones = [z for z in zones if any(hint in z[0] for hint in CPU_ZONE_HINTS)]
    chosen = cpu_zones or zones
    at_trip: Optional[bool] = None
    with_trip = [(temp, trip) for _, temp, trip in chosen if trip is not None]
    if with_trip:
        at_trip = any(temp >= trip for temp, trip in with_trip)
    return ThermalReading(
        cpu_freq_mhz=sum(freqs) / len(freqs) if freqs else None,
        temperature_c=max(temp for _, temp, _ in chosen) if chosen else None,
        at_trip_point=at_trip,
    )


def temperature_rise_c(before: ThermalReading, after: ThermalReading) -> Optional[float]:
    """Returns after - before in °C, or None when either temperature is unreadable."""
    if before.temperature_c is None or after.temperature_c is None:
        return None
    return after.temperature_c - before.temperature_c


def throttled(
    before: ThermalReading, after: ThermalReading, max_freq_mhz: Optional[float] = None
) -> bool:
    """Says whether the CPU probably throttled between two readings (a heuristic).

    True when the mean frequency dropped by more than 10 % (of `max_freq_mhz` when given,
    else of the frequency before), or when a zone reached a throttling trip point.
    Unreadable fields count as no evidence.

    Args:
        before: reading taken before the timed runs.
        after: reading taken after them.
        max_freq_mhz: the CPU's maximum frequency in MHz (`max_cpu_freq_mhz()`); optional.
    """
    if after.at_trip_point or before.at_trip_point:
        return True
    if before.cpu_freq_mhz is None or after.cpu_freq_mhz is None:
        return False
    reference = max_freq_mhz if max_freq_mhz else before.cpu_freq_mhz
    return before.cpu_freq_mhz - after.cpu_freq_mhz > FREQ_DROP_FRACTION * reference
