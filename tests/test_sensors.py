"""Tests of the device agent's power and thermal sensors.

Three kinds:
- file-format parsing tests (stand-in: sysfs): a directory tree with the real sysfs layout
  is built in tmp_path and `EDGELOOP_SYSFS_ROOT` points at it, because this machine has no
  RAPL, INA3221 or battery and the tests need chosen figures (a counter about to wrap, a
  rail's voltage and current); the figures in those files are test inputs, and the tests
  check the parsing and arithmetic, not any device's power;
- plumbing tests of the sampler with the command sensor running a real script;
- hardware tests that read the real sensors of this machine and skip, with the sensor's
  own reason, where it is absent; the `command` sensor reads the external meter that
  `EDGELOOP_POWER_COMMAND` names, or else a meter script the test writes (so it always runs).
"""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device_agent.sensors import (
    SENSORS,
    PowerSampler,
    PowerWindow,
    SensorError,
    energy_per_inference_mj,
    max_cpu_freq_mhz,
    pick_sensor,
    read_thermal,
    sensor_infos,
    throttled,
)
from device_agent.sensors._sysfs import SYSFS_ROOT_ENV
from device_agent.sensors.android_battery import AndroidBatterySensor
from device_agent.sensors.command import POWER_COMMAND_ENV, CommandSensor, run_power_command
from device_agent.sensors.ina3221 import Ina3221Sensor
from device_agent.sensors.nvml import NVML_INDEX_ENV, NvmlSensor
from device_agent.sensors.rapl import RaplSensor
from device_agent.sensors.thermal import ThermalReading

RAPL_MAX_UJ = 262_143_328_850  # max_energy_range_uj as a real Intel package reports it


# ---------------------------------------------------------------- helpers and fixtures


def write(root: Path, relative: str, text: object) -> Path:
    """Writes one sysfs file (creating its folders) atomically, as the kernel updates it."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{text}\n")
    os.replace(tmp, path)
    return path


@pytest.fixture
def sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty sysfs root the sensors read instead of /, and no power command configured."""
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv(SYSFS_ROOT_ENV, str(root))
    monkeypatch.delenv(POWER_COMMAND_ENV, raising=False)
    return root


def rapl_package(root: Path, index: int, name: str, energy_uj: int) -> Path:
    base = f"sys/class/powercap/intel-rapl:{index}"
    write(root, f"{base}/name", name)
    write(root, f"{base}/max_energy_range_uj", RAPL_MAX_UJ)
    return write(root, f"{base}/energy_uj", energy_uj)


def script(tmp_path: Path, name: str, body: str) -> str:
    """Writes an executable shell script and returns the command line that runs it."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def readable_positive_int(path: Path) -> bool:
    try:
        return int(path.read_text()) > 0
    except (OSError, ValueError):
        return False


def nvml_available() -> bool:
    return NvmlSensor.availability().available


# ---------------------------------------------------------------- RAPL (file format)


def test_rapl_reads_energy_counter_with_wraparound_from_sysfs_layout(sysfs: Path) -> None:
    pkg0 = rapl_package(sysfs, 0, "package-0", RAPL_MAX_UJ - 1_000_000)
    pkg1 = rapl_package(sysfs, 1, "package-1", 5_000_000)
    write(sysfs, "sys/class/powercap/intel-rapl:0/intel-rapl:0:0/name", "core")
    write(sysfs, "sys/class/powercap/intel-rapl:0/intel-rapl:0:0/energy_uj", 123)
    rapl_package(sysfs, 2, "psys", 9_000_000)  # platform domain: would double count

    found = RaplSensor.availability()
    assert found.available, found.reason
    assert "package-0" in found.detail and "package-1" in found.detail
    assert "psys" not in found.detail and "core" not in found.detail

    with RaplSensor() as sensor:
        first = sensor.read_energy_j()
        write(sysfs, pkg0.relative_to(sysfs).as_posix(), 500_000)  # wrapped past the max
        write(sysfs, pkg1.relative_to(sysfs).as_posix(), 7_000_000)
        second = sensor.read_energy_j()
    assert first == pytest.approx((RAPL_MAX_UJ - 1_000_000 + 5_000_000) / 1e6)
    assert second - first == pytest.approx(1.5 + 2.0)


def test_rapl_read_watts_divides_counter_difference_by_time_between_reads(sysfs: Path) -> None:
    counter = rapl_package(sysfs, 0, "package-0", 10_000_000).relative_to(sysfs).as_posix()
    with RaplSensor() as sensor:
        before_first = time.monotonic()
        sensor.read_watts()  # no earlier read: measures over a short interval of its own
        after_first = time.monotonic()
        write(sysfs, counter, 11_000_000)  # +1 J
        before_second = time.monotonic()
        watts = sensor.read_watts()
        after_second = time.monotonic()
    longest, shortest = after_second - before_first, before_second - after_first
    assert 1.0 / longest <= watts <= 1.0 / shortest


def test_rapl_is_unavailable_without_a_package_domain(sysfs: Path) -> None:
    rapl_package(sysfs, 0, "psys", 1)
    found = RaplSensor.availability()
    assert not found.available
    assert "no package domain" in found.reason and str(sysfs) in found.reason


# ---------------------------------------------------------------- INA3221 (file format)


def ina3221_hwmon(root: Path, addr: str, hwmon: str, rails: list[tuple[str, int, int]]) -> Path:
    """Builds a device folder with hwmon channels, linked from the driver and from /sys/class."""
    device = root / f"sys/devices/platform/bus@0/c240000.i2c/i2c-1/{addr}"
    hw = device / "hwmon" / hwmon
    write(hw, "name", "ina3221")
    for channel, (label, millivolts, milliamps) in enumerate(rails, start=1):
        write(hw, f"in{channel}_label", label)
        write(hw, f"in{channel}_input", millivolts)
        write(hw, f"curr{channel}_input", milliamps)
        write(hw, f"in{channel + 3}_input", 40)  # shunt voltage channels, not rails
    write(hw, "curr4_input", 9999)  # the driver's summed current: not a rail
    driver = root / "sys/bus/i2c/drivers/ina3221"
    driver.mkdir(parents=True, exist_ok=True)
    (driver / addr).symlink_to(device)
    hwmon_class = root / "sys/class/hwmon"
    hwmon_class.mkdir(parents=True, exist_ok=True)
    (hwmon_class / hwmon).symlink_to(hw)
    return hw


def test_ina3221_hwmon_layout_reports_the_vdd_in_rail_as_board_power(sysfs: Path) -> None:
    rails = [("VDD_IN", 5080, 1200), ("VDD_CPU_GPU_CV", 5072, 300), ("VDD_SOC", 5072, 250)]
    ina3221_hwmon(sysfs, "1-0040", "hwmon3", rails)
    found = Ina3221Sensor.availability()
    assert found.available, found.reason
    assert "VDD_IN" in found.detail
    with Ina3221Sensor() as sensor:
        assert sensor.read_watts() == pytest.approx(5080 * 1200 / 1e6)


def test_ina3221_hwmon_layout_without_total_rail_sums_connected_rails_once(sysfs: Path) -> None:
    first = [("VDD_GPU_SOC", 5000, 1000), ("VDD_CPU_CV", 5000, 400), ("VIN_SYS_5V0", 5000, 600)]
    ina3221_hwmon(sysfs, "1-0040", "hwmon1", first)
    second = ina3221_hwmon(
        sysfs, "1-0041", "hwmon2", [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 5000, 100), ("NC", 0, 0)]
    )
    write(second, "in1_enable", 0)
    expected = sum(mv * ma for _, mv, ma in first) / 1e6 + 5000 * 100 / 1e6
    with Ina3221Sensor() as sensor:
        assert sensor.read_watts() == pytest.approx(expected)
    detail = Ina3221Sensor.availability().detail
    assert "VDDQ_VDD2_1V8AO" in detail and "NC" not in detail.replace(",", " ").split()


def test_ina3221_legacy_iio_layout_reads_power_in_milliwatts(sysfs: Path) -> None:
    iio = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for index, (rail, milliwatts) in enumerate(
        [("POM_5V_IN", 3120), ("POM_5V_GPU", 400), ("POM_5V_CPU", 900)]
    ):
        write(sysfs, f"{iio}/rail_name_{index}", rail)
        write(sysfs, f"{iio}/in_power{index}_input", milliwatts)
        write(sysfs, f"{iio}/in_current{index}_input", milliwatts // 5)
    with Ina3221Sensor() as sensor:
        assert sensor.read_watts() == pytest.approx(3.120)


def test_ina3221_is_unavailable_without_rails(sysfs: Path) -> None:
    found = Ina3221Sensor.availability()
    assert not found.available and "INA3221" in found.reason


# ---------------------------------------------------------------- Android battery (file format)


def battery(root: Path, status: str, current_ua: int, voltage_uv: int) -> None:
    base = "sys/class/power_supply/battery"
    write(root, f"{base}/status", status)
    write(root, f"{base}/current_now", current_ua)
    write(root, f"{base}/voltage_now", voltage_uv)


def test_android_battery_layout_multiplies_current_magnitude_by_voltage(sysfs: Path) -> None:
    battery(sysfs, "Discharging", -450_000, 3_900_000)
    assert AndroidBatterySensor.availability().available
    assert AndroidBatterySensor().read_watts() == pytest.approx(0.45 * 3.9)


def test_android_battery_is_unavailable_while_charging_and_says_so(sysfs: Path) -> None:
    battery(sysfs, "Charging", 800_000, 4_200_000)
    found = AndroidBatterySensor.availability()
    assert not found.available and "Charging" in found.reason
    with pytest.raises(SensorError, match="Charging"):
        AndroidBatterySensor().read_watts()


# ---------------------------------------------------------------- thermal (file format)


def cpus(root: Path, cur_khz: list[int], max_khz: int) -> None:
    for index, khz in enumerate(cur_khz):
        write(root, f"sys/devices/system/cpu/cpu{index}/cpufreq/scaling_cur_freq", khz)
        write(root, f"sys/devices/system/cpu/cpu{index}/cpufreq/cpuinfo_max_freq", max_khz)


def zone(root: Path, index: int, kind: str, milli_c: int, trips: tuple = ()) -> None:
    base = f"sys/class/thermal/thermal_zone{index}"
    write(root, f"{base}/type", kind)
    write(root, f"{base}/temp", milli_c)
    for number, (trip_type, trip_milli_c) in enumerate(trips):
        write(root, f"{base}/trip_point_{number}_type", trip_type)
        write(root, f"{base}/trip_point_{number}_temp", trip_milli_c)


def test_thermal_parses_cpufreq_and_cpu_zones_from_sysfs_layout(sysfs: Path) -> None:
    cpus(sysfs, [1_800_000, 1_200_000], 3_400_000)
    zone(sysfs, 0, "acpitz", 45_000, (("critical", 105_000),))
    zone(sysfs, 1, "x86_pkg_temp", 61_000, (("passive", 100_000),))
    zone(sysfs, 2, "iwlwifi_1", 70_000)  # not the CPU: ignored while CPU zones exist
    reading = read_thermal()
    assert reading.cpu_freq_mhz == pytest.approx(1500.0)
    assert reading.temperature_c == pytest.approx(61.0)
    assert reading.at_trip_point is False
    assert max_cpu_freq_mhz() == pytest.approx(3400.0)


def test_thermal_uses_all_zones_when_none_is_cpu_like(sysfs: Path) -> None:
    zone(sysfs, 0, "battery", 30_000)
    zone(sysfs, 1, "gpu-thermal", 52_000)
    assert read_thermal().temperature_c == pytest.approx(52.0)


def test_thermal_fields_are_none_when_sysfs_has_no_files(sysfs: Path) -> None:
    assert read_thermal() == ThermalReading(None, None, None)
    assert max_cpu_freq_mhz() is None


def test_thermal_zone_at_passive_trip_point_counts_as_throttled(sysfs: Path) -> None:
    zone(sysfs, 0, "cpu-thermal", 65_000, (("active", 50_000), ("passive", 60_000)))
    reading = read_thermal()
    assert reading.at_trip_point is True
    assert throttled(ThermalReading(None, None), reading)


def test_throttled_compares_frequency_drop_with_ten_percent() -> None:
    before, after = ThermalReading(2000.0, 50.0), ThermalReading(1700.0, 55.0)
    assert throttled(before, after)  # 300 MHz > 10 % of 2000 MHz
    assert not throttled(before, after, max_freq_mhz=3400.0)  # 300 MHz < 10 % of 3400 MHz
    assert not throttled(before, ThermalReading(None, None))  # unreadable: no evidence


# ---------------------------------------------------------------- command sensor


def test_command_sensor_rejects_non_numeric_output_naming_the_command(tmp_path: Path) -> None:
    command = script(tmp_path, "meter.sh", "echo 'power: high'\n")
    with pytest.raises(SensorError, match="meter.sh") as raised:
        CommandSensor(command).read_watts()
    assert "power: high" in str(raised.value)


def test_command_sensor_kills_a_command_that_overruns_its_timeout(tmp_path: Path) -> None:
    command = script(tmp_path, "hang.sh", "sleep 30\necho 1\n")
    started = time.monotonic()
    with pytest.raises(SensorError, match="did not finish within 0.3 s"):
        run_power_command(command, timeout_s=0.3)
    assert time.monotonic() - started < 10


def test_command_sensor_is_available_only_when_configured_and_working(
    sysfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "not set" in CommandSensor.availability().reason
    monkeypatch.setenv(POWER_COMMAND_ENV, script(tmp_path, "bad.sh", "exit 3\n"))
    found = CommandSensor.availability()
    assert not found.available and "exited with 3" in found.reason
    monkeypatch.setenv(POWER_COMMAND_ENV, script(tmp_path, "good.sh", "echo 4.25\n"))
    found = CommandSensor.availability()
    assert found.available and "good.sh" in found.detail
    assert CommandSensor().read_watts() == 4.25


# ---------------------------------------------------------------- sampler


def counting_meter(tmp_path: Path, watts: str) -> tuple[str, Path]:
    """A meter script that logs each run to a file and prints `watts`."""
    log = tmp_path / "runs.log"
    command = script(tmp_path, "meter.sh", f"echo run >> '{log}'\necho {watts}\n")
    return command, log


def test_sampler_takes_one_sample_per_command_run_at_the_requested_rate(tmp_path: Path) -> None:
    command, log = counting_meter(tmp_path, "2.5")
    window = PowerSampler(CommandSensor(command), rate_hz=20).measure_idle(0.6)
    runs = len(log.read_text().splitlines())
    assert window.samples == runs == len(window.watts)
    assert window.failed_reads == 0
    assert 3 <= window.samples <= math.ceil(window.duration_s * 20) + 1
    assert window.method == "samples"
    assert window.mean_w == pytest.approx(2.5)
    assert window.energy_j == pytest.approx(2.5 * window.duration_s)


def test_sampler_mean_lies_between_alternating_sample_values(tmp_path: Path) -> None:
    state = tmp_path / "state"
    body = f"if [ -e '{state}' ]; then rm '{state}'; echo 1; else touch '{state}'; echo 3; fi\n"
    window = PowerSampler(CommandSensor(script(tmp_path, "alt.sh", body)), 20).measure_idle(0.5)
    assert set(window.watts) == {1.0, 3.0}
    assert 1.0 < window.mean_w < 3.0


def test_sampler_measures_idle_then_a_second_window_with_the_same_sensor(tmp_path: Path) -> None:
    command, log = counting_meter(tmp_path, "1.5")
    sampler = PowerSampler(CommandSensor(command), rate_hz=20)
    idle = sampler.measure_idle(0.2)
    sampler.start()
    with pytest.raises(RuntimeError, match="already running"):
        sampler.start()
    active = sampler.stop()
    assert idle.samples >= 1 and active.samples >= 1
    assert idle.samples + active.samples == len(log.read_text().splitlines())
    with pytest.raises(RuntimeError, match="not started"):
        sampler.stop()


def test_sampler_raises_when_no_sample_could_be_read(tmp_path: Path) -> None:
    sampler = PowerSampler(CommandSensor(script(tmp_path, "broken.sh", "exit 3\n")), 20)
    with pytest.raises(SensorError, match="no sample.*exited with 3"):
        sampler.measure_idle(0.2)


def test_sampler_uses_rapl_energy_counter_across_wraparound(sysfs: Path) -> None:
    counter = rapl_package(sysfs, 0, "package-0", RAPL_MAX_UJ - 500_000)
    sampler = PowerSampler(RaplSensor(), rate_hz=20)
    sampler.start()
    write(sysfs, counter.relative_to(sysfs).as_posix(), 1_500_000)  # wrapped: +2 J
    window = sampler.stop()
    assert window.method == "energy-counter"
    assert window.energy_j == pytest.approx(2.0)
    assert window.mean_w == pytest.approx(2.0 / window.duration_s)
    assert window.samples >= 1


def test_sampler_refuses_a_rate_that_is_not_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rate_hz"):
        PowerSampler(CommandSensor("echo 1"), rate_hz=0)


def test_energy_per_inference_is_power_above_idle_over_the_window_per_run_never_negative():
    idle = PowerWindow(mean_w=3.0, samples=5, duration_s=0.5, energy_j=1.5, method="samples")
    busy = PowerWindow(mean_w=5.0, samples=9, duration_s=1.0, energy_j=5.0, method="samples")
    # 2 W above idle for a 1.0 s window of 500 runs: 2 J / 500 = 4 mJ per inference
    assert energy_per_inference_mj(busy, idle, 1.0, 500) == pytest.approx(4.0)
    assert energy_per_inference_mj(idle, busy, 1.0, 500) == 0.0
    with pytest.raises(ValueError, match="window_s"):
        energy_per_inference_mj(busy, idle, float("nan"), 500)
    with pytest.raises(ValueError, match="runs"):
        energy_per_inference_mj(busy, idle, 1.0, 0)


# ---------------------------------------------------------------- registry


def test_pick_sensor_unknown_name_raises_value_error_listing_known_names() -> None:
    with pytest.raises(ValueError) as raised:
        pick_sensor("wattmeter")
    for name in [*SENSORS, "none"]:
        assert name in str(raised.value)


def test_pick_sensor_none_means_no_sensor() -> None:
    assert pick_sensor("none") is None


def test_pick_sensor_named_unavailable_sensor_raises_lookup_error_with_reason(sysfs: Path) -> None:
    battery(sysfs, "Charging", 800_000, 4_200_000)
    with pytest.raises(LookupError, match="android-battery.*Charging"):
        pick_sensor("android-battery")


def test_pick_sensor_empty_name_takes_first_available_in_order(sysfs: Path) -> None:
    rapl_package(sysfs, 0, "package-0", 1_000)
    ina3221_hwmon(sysfs, "1-0040", "hwmon3", [("VDD_IN", 5000, 1000)])
    sensor = pick_sensor("")  # a CPU run: never NVML, whatever GPU is here
    assert sensor is not None and sensor.name == "ina3221"
    assert pick_sensor("rapl").name == "rapl"


def test_pick_sensor_empty_name_gives_none_when_nothing_is_available(sysfs: Path) -> None:
    assert pick_sensor("") is None  # a CPU run: an NVIDIA GPU here is not its sensor
    if not nvml_available():
        assert pick_sensor("", accelerator="cuda") is None


def test_sensor_infos_report_every_sensor_with_rate_and_reason(sysfs: Path) -> None:
    rapl_package(sysfs, 0, "package-0", 1_000)
    infos = {info.name: info for info in sensor_infos()}
    assert list(infos) == ["nvml", "ina3221", "rapl", "android-battery", "command"]
    assert infos["rapl"].available and "package-0" in infos["rapl"].detail
    for info in infos.values():
        assert info.rate_hz == SENSORS[info.name].default_rate_hz > 0
        assert info.available or info.reason


def test_nvml_bad_index_is_reported_as_unavailable_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NVML_INDEX_ENV, "first")
    reason = NvmlSensor.availability().reason
    assert NVML_INDEX_ENV in reason or "pynvml is not installed" in reason


def test_sensor_modules_import_no_optional_module() -> None:
    code = (
        "import sys, device_agent.sensors, device_agent.sensors.registry;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pynvml', 'torch', 'toolkit'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- hardware (this machine)


@pytest.mark.parametrize("name", list(SENSORS))
def test_real_sensor_reads_finite_power_when_present(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`command` reads the external meter named by EDGELOOP_POWER_COMMAND where the machine
    running the tests has one; elsewhere a meter script the test writes (the real protocol:
    a command that prints watts), so the command sensor is read on every machine."""
    monkeypatch.delenv(SYSFS_ROOT_ENV, raising=False)
    scripted = name == "command" and not os.environ.get(POWER_COMMAND_ENV, "").strip()
    if scripted:
        write(tmp_path, "watts", 1.5)
        monkeypatch.setenv(POWER_COMMAND_ENV, script(tmp_path, "meter.sh",
                                                     f"exec cat '{tmp_path / 'watts'}'\n"))
    found = SENSORS[name].availability()
    assert found.available or not scripted, found.reason  # the test's own meter must work
    if not found.available:
        pytest.skip(f"{name} is not available on this machine: {found.reason}")
    sensor = SENSORS[name]()
    with sensor:
        watts = sensor.read_watts()
        first, second = sensor.read_energy_j(), sensor.read_energy_j()
    assert math.isfinite(watts) and watts >= 0
    if scripted:
        assert watts == 1.5  # what the meter script printed
    if first is not None:
        assert second >= first
    window = PowerSampler(sensor, rate_hz=10).measure_idle(0.3)
    assert window.samples >= 1 and math.isfinite(window.mean_w) and window.mean_w >= 0


def test_real_thermal_reports_only_what_this_machine_exposes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SYSFS_ROOT_ENV, raising=False)
    reading = read_thermal()
    freq_files = Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")
    has_freq = any(readable_positive_int(path) for path in freq_files)
    has_zone = any(Path("/sys/class/thermal").glob("thermal_zone[0-9]*/temp"))
    assert (reading.cpu_freq_mhz is not None) == has_freq
    if not has_zone:
        assert reading.temperature_c is None
    if reading.cpu_freq_mhz is not None:
        assert reading.cpu_freq_mhz > 0
