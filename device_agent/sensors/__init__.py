"""Power and thermal sensors of the device agent: one module per sensor, a registry, a sampler.

Optional modules (pynvml) are imported only when a sensor is checked or opened.
"""

from device_agent.sensors.base import (
    Availability,
    PowerSensor,
    SensorError,
    SensorUnavailableError,
    UnknownSensorError,
)
from device_agent.sensors.registry import SENSORS, SensorStatus, pick_sensor, sensor_infos
from device_agent.sensors.sampler import PowerSampler, PowerWindow, energy_per_inference_mj
from device_agent.sensors.thermal import ThermalReading, max_cpu_freq_mhz, read_thermal, throttled

__all__ = [
    "SENSORS",
    "Availability",
    "PowerSampler",
    "PowerSensor",
    "PowerWindow",
    "SensorError",
    "SensorStatus",
    "SensorUnavailableError",
    "ThermalReading",
    "UnknownSensorError",
    "energy_per_inference_mj",
    "max_cpu_freq_mhz",
    "pick_sensor",
    "read_thermal",
    "sensor_infos",
    "throttled",
]
