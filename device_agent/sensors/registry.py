"""The power sensors by name, what GetInfo reports about them, and choosing one.

The sensor modules import only the standard library at import time (optional modules such
as `pynvml` load when a sensor is checked), so importing this registry is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from device_agent.sensors.android_battery import AndroidBatterySensor
from device_agent.sensors.base import (
    Availability,
    PowerSensor,
    SensorUnavailableError,
    UnknownSensorError,
)
from device_agent.sensors.command import CommandSensor
from device_agent.sensors.ina3221 import Ina3221Sensor
from device_agent.sensors.nvml import NvmlSensor
from device_agent.sensors.rapl import RaplSensor

#: Name → every registered sensor class.
SENSORS: dict[str, type[PowerSensor]] = {
    cls.name: cls
    for cls in (NvmlSensor, Ina3221Sensor, RaplSensor, AndroidBatterySensor, CommandSensor)
}
#: Accelerator → the sensors an empty name tries for a run on it, in order: a sensor that
#: sees that accelerator's power. NVML reads the GPU board, so only a CUDA run uses it (a CPU
#: run on a GPU host would otherwise report the GPU's power change); RAPL reads the CPU
#: package, so a CUDA run does not. Board and whole-device meters (Jetson INA3221 rails,
#: Android battery, an external meter behind a command) see both.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cpu": ("ina3221", "rapl", "android-battery", "command"),
    "cuda": ("nvml", "ina3221", "android-battery", "command"),
}
#: The name that asks for no power measurement.
NO_SENSOR = "none"


@dataclass(frozen=True)
class SensorStatus:
    """One sensor as GetInfo reports it (maps onto the `SensorInfo` message).

    Attributes:
        name: registry name, e.g. "rapl".
        available: whether it can be read on this device.
        reason: why not, when unavailable; empty otherwise.
        rate_hz: the sampling rate the agent uses for it, in Hz.
        detail: what it reads (GPU, rails, domains, command).
    """

    name: str
    available: bool
    reason: str
    rate_hz: float
    detail: str


def _check(cls: type[PowerSensor]) -> Availability:
    try:
        return cls.availability()
    except Exception as exc:  # a sensor's check must never take GetInfo down
        return Availability(False, f"{cls.name}: availability check failed: {exc}")


def sensor_infos() -> list[SensorStatus]:
    """Returns the status of every registered sensor, in registry order."""
    statuses = []
    for name, cls in SENSORS.items():
        found = _check(cls)
        statuses.append(
            SensorStatus(name, found.available, found.reason, cls.default_rate_hz, found.detail)
        )
    return statuses


def pick_sensor(name: str = "", accelerator: str = "cpu") -> Optional[PowerSensor]:
    """Returns a (not yet opened) sensor for a benchmark's `power_sensor` option.

    Args:
        name: "" picks the first available sensor of `AUTO_ORDER[accelerator]`; "none" asks
            for no sensor; anything else names one, which is used whatever the accelerator.
        accelerator: what the model runs on, "cpu" or "cuda" ("" and unknown ones: "cpu").

    Returns:
        The sensor, or None for "none" or when "" finds no available sensor.

    Raises:
        UnknownSensorError: (a ValueError) the name is not registered; lists the known names.
        SensorUnavailableError: (a LookupError) the named sensor cannot be used; says why.
    """
    wanted = name.strip()
    if wanted == NO_SENSOR:
        return None
    if not wanted:
        for candidate in AUTO_ORDER.get(accelerator, AUTO_ORDER["cpu"]):
            cls = SENSORS[candidate]
            if _check(cls).available:
                return cls()
        return None
    cls = SENSORS.get(wanted)
    if cls is None:
        known = ", ".join([*SENSORS, NO_SENSOR])
        raise UnknownSensorError(f"unknown power sensor {wanted!r}; expected one of: {known}")
    found = _check(cls)
    if not found.available:
        raise SensorUnavailableError(f"power sensor {wanted!r} is unavailable: {found.reason}")
    return cls()
