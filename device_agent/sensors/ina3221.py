"""NVIDIA Jetson board power from the INA3221 power monitors.

Two layouts are read (under the sysfs root):

- hwmon (JetPack 5 and later): `sys/bus/i2c/drivers/ina3221*/<bus-addr>/hwmon/hwmon*/`, or
  any `sys/class/hwmon/hwmon*/` whose `name` is "ina3221". Channel N (1-3) has
  `inN_input` (bus voltage, mV), `currN_input` (current, mA), `inN_label` (rail name such as
  "VDD_IN") and optionally `inN_enable` (0: channel disabled). Label "NC" means not connected.
- iio (JetPack 4, driver ina3221x): `sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:device*/`
  with `in_powerN_input` (mW) and `rail_name_N`.

Board power is the total-input rail (VDD_IN, or POM_5V_IN on the Jetson Nano) when there is
one, else the sum of all connected rails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from device_agent.sensors._sysfs import read_int, sys_glob, sys_path, try_read_int, try_read_str
from device_agent.sensors.base import Availability, PowerSensor, SensorError

HWMON_GLOBS = ("sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*", "sys/class/hwmon/hwmon*")
IIO_GLOB = "sys/bus/i2c/drivers/ina3221x/*/iio:device*"
#: Rails that carry the whole board's input power.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")

_HWMON_CURRENT = re.compile(r"^curr([1-3])_input$")
_IIO_POWER = re.compile(r"^in_power(\d+)_input$")


@dataclass(frozen=True)
class Rail:
    """One measured rail: either voltage (mV) and current (mA) files, or a power (mW) file."""

    label: str
    voltage_mv_path: Optional[Path] = None
    current_ma_path: Optional[Path] = None
    power_mw_path: Optional[Path] = None

    def read_watts(self) -> float:
        """Returns this rail's power in watts.

        Raises:
            OSError: a file cannot be read.
            ValueError: a file does not hold an integer.
        """
        if self.power_mw_path is not None:
            return read_int(self.power_mw_path) / 1e3
        assert self.voltage_mv_path is not None and self.current_ma_path is not None
        return read_int(self.voltage_mv_path) * read_int(self.current_ma_path) / 1e6


def _hwmon_dirs() -> list[Path]:
    seen: dict[Path, Path] = {}
    for pattern in HWMON_GLOBS:
        for path in sys_glob(pattern):
            if pattern.startswith("sys/class") and try_read_str(path / "name") != "ina3221":
                continue
            seen.setdefault(path.resolve(), path)
    return list(seen.values())


def _hwmon_rails(directory: Path) -> list[Rail]:
    rails = []
    for current in sorted(directory.glob("curr*_input")):
        match = _HWMON_CURRENT.match(current.name)
        if match is None:
            continue
        channel = match.group(1)
        voltage = directory / f"in{channel}_input"
        if not voltage.exists():
            continue
        if try_read_int(directory / f"in{channel}_enable") == 0:
            continue
        label = try_read_str(directory / f"in{channel}_label") or f"{directory.name}/in{channel}"
        if label.upper() != "NC":
            rails.append(Rail(label, voltage_mv_path=voltage, current_ma_path=current))
    return rails


def _iio_rails(directory: Path) -> list[Rail]:
    rails = []
    for power in sorted(directory.glob("in_power*_input")):
        match = _IIO_POWER.match(power.name)
        if match is None:
            continue
        label = try_read_str(directory / f"rail_name_{match.group(1)}") or power.name
        if label.upper() != "NC":
            rails.append(Rail(label, power_mw_path=power))
    return rails


def find_rails() -> list[Rail]:
    """Returns every connected INA3221 rail under the sysfs root, in both layouts."""
    rails = [rail for d in _hwmon_dirs() for rail in _hwmon_rails(d)]
    return rails + [rail for d in sys_glob(IIO_GLOB) for rail in _iio_rails(d)]


def board_rails(rails: list[Rail]) -> list[Rail]:
    """Returns the rails whose sum is board power: the first total-input rail, else all."""
    for name in TOTAL_RAILS:
        for rail in rails:
            if rail.label.upper() == name:
                return [rail]
    return list(rails)


class Ina3221Sensor(PowerSensor):
    """Jetson board power in watts from INA3221 rails (VDD_IN, else the sum of rails)."""

    name = "ina3221"
    default_rate_hz = 10.0

    def __init__(self) -> None:
        self._rails: list[Rail] = []

    @classmethod
    def availability(cls) -> Availability:
        """Says whether INA3221 rails exist and read; detail names the rails summed."""
        rails = board_rails(find_rails())
        if not rails:
            return Availability(
                False,
                f"no INA3221 rail in {sys_path('sys/bus/i2c/drivers')} or "
                f"{sys_path('sys/class/hwmon')} (expected hwmon ina3221 or iio ina3221x)",
            )
        try:
            _sum_watts(rails)
        except SensorError as exc:
            return Availability(False, str(exc))
        labels = ", ".join(r.label for r in rails)
        total = len(rails) == 1 and rails[0].label.upper() in TOTAL_RAILS
        what = "total input rail" if total else "sum of"
        return Availability(True, detail=f"{what} {labels}")

    def open(self) -> None:
        """Finds the rails to sum.

        Raises:
            SensorError: no INA3221 rail exists.
        """
        if not self._rails:
            self._rails = board_rails(find_rails())
        if not self._rails:
            raise SensorError(f"ina3221: no INA3221 rail under {sys_path('sys')}")

    def close(self) -> None:
        """Forgets the rails."""
        self._rails = []

    def read_watts(self) -> float:
        """Returns board power in watts.

        Raises:
            SensorError: a rail file cannot be read (names the file).
        """
        if not self._rails:
            self.open()
        return _sum_watts(self._rails)


def _sum_watts(rails: list[Rail]) -> float:
    try:
        return sum(rail.read_watts() for rail in rails)
    except (OSError, ValueError) as exc:
        raise SensorError(f"ina3221: cannot read a rail: {exc}") from exc
