"""Phone power from the battery fuel gauge (Android and other Linux phones).

Layout read (under the sysfs root): `sys/class/power_supply/battery/` with `current_now`
(µA; the sign convention differs between vendors, so its magnitude is used), `voltage_now`
(µV) and `status`. Power is |current| × voltage.

While the phone is on external power (`status` "Charging" or "Full") the battery current
does not show what the phone draws, so the sensor is unavailable then, and a read raises.
"""

from __future__ import annotations

from device_agent.sensors._sysfs import read_int, read_str, sys_path
from device_agent.sensors.base import Availability, PowerSensor, SensorError

BATTERY_DIR = "sys/class/power_supply/battery"
#: Battery states in which the charger, not the battery, powers the phone.
EXTERNAL_POWER_STATES = ("Charging", "Full")


def _read_battery_watts() -> float:
    """Returns battery discharge power in watts.

    Raises:
        SensorError: a file is missing or unreadable, or the phone is on external power.
    """
    directory = sys_path(BATTERY_DIR)
    try:
        status = read_str(directory / "status")
        current_ua = read_int(directory / "current_now")
        voltage_uv = read_int(directory / "voltage_now")
    except (OSError, ValueError) as exc:
        raise SensorError(f"android-battery: cannot read {directory}: {exc}") from exc
    if status in EXTERNAL_POWER_STATES:
        raise SensorError(
            f"android-battery: {directory / 'status'} says {status}: the battery current is "
            "meaningless on external power; unplug the charger"
        )
    return abs(current_ua) * voltage_uv / 1e12


class AndroidBatterySensor(PowerSensor):
    """Power in watts drawn from the battery, from current_now × voltage_now."""

    name = "android-battery"
    default_rate_hz = 5.0

    @classmethod
    def availability(cls) -> Availability:
        """Says whether the battery files read and the phone runs on its battery."""
        try:
            _read_battery_watts()
        except SensorError as exc:
            return Availability(False, str(exc))
        return Availability(True, detail=f"{BATTERY_DIR}: |current_now| (µA) × voltage_now (µV)")

    def read_watts(self) -> float:
        """Returns the battery's discharge power in watts.

        Raises:
            SensorError: unreadable files, or the phone went on external power.
        """
        return _read_battery_watts()
