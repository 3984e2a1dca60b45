"""NVIDIA GPU power through NVML (`pynvml`, from the nvidia-ml-py package).

Power is `nvmlDeviceGetPowerUsage` (milliwatts, the board's power draw). GPUs from Volta on
also have a total-energy counter, `nvmlDeviceGetTotalEnergyConsumption` (millijoules since
the driver was loaded), which `read_energy_j` returns. The GPU is chosen by the environment
variable `EDGELOOP_NVML_INDEX` (default 0). `pynvml` is imported only when the sensor is
checked or opened, never at module import time.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Optional

from device_agent.sensors.base import Availability, PowerSensor, SensorError

NVML_INDEX_ENV = "EDGELOOP_NVML_INDEX"


def _import_pynvml() -> ModuleType:
    import pynvml  # optional dependency (nvidia-ml-py), imported lazily

    return pynvml


def _gpu_index() -> int:
    """Returns the GPU index from EDGELOOP_NVML_INDEX (default 0).

    Raises:
        ValueError: the variable is not a non-negative integer.
    """
    text = os.environ.get(NVML_INDEX_ENV, "").strip() or "0"
    try:
        index = int(text)
    except ValueError:
        raise ValueError(f"{NVML_INDEX_ENV}={text!r}: expected a GPU index (integer)") from None
    if index < 0:
        raise ValueError(f"{NVML_INDEX_ENV}={text!r}: expected a GPU index >= 0")
    return index


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSensor(PowerSensor):
    """Power (W) and total energy (J) of one NVIDIA GPU, read through NVML."""

    name = "nvml"
    default_rate_hz = 10.0

    def __init__(self) -> None:
        self._nvml: Optional[ModuleType] = None
        self._handle: Any = None
        self._has_energy = False

    @classmethod
    def availability(cls) -> Availability:
        """Says whether NVML is installed, initialises, and reads power for the chosen GPU."""
        try:
            nvml = _import_pynvml()
        except ImportError:
            return Availability(False, "pynvml is not installed (pip install nvidia-ml-py)")
        try:
            index = _gpu_index()
        except ValueError as exc:
            return Availability(False, str(exc))
        try:
            nvml.nvmlInit()
        except Exception as exc:  # pynvml raises NVMLError subclasses, or OSError for the library
            return Availability(False, f"nvmlInit failed: {exc}")
        try:
            count = nvml.nvmlDeviceGetCount()
            if index >= count:
                return Availability(False, f"{NVML_INDEX_ENV}={index} but NVML sees {count} GPU(s)")
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            gpu = _text(nvml.nvmlDeviceGetName(handle))
            try:
                nvml.nvmlDeviceGetPowerUsage(handle)
            except Exception as exc:
                return Availability(False, f"GPU {index} ({gpu}) does not report power: {exc}")
            energy = "yes" if _has_energy_counter(nvml, handle) else "no"
            return Availability(True, detail=f"GPU {index}: {gpu}; energy counter: {energy}")
        except Exception as exc:
            return Availability(False, f"NVML query failed for GPU {index}: {exc}")
        finally:
            _shutdown(nvml)

    def open(self) -> None:
        """Initialises NVML and takes a handle on the chosen GPU.

        Raises:
            SensorError: pynvml is missing, NVML fails to initialise, or the index is invalid.
        """
        if self._nvml is not None:
            return
        try:
            nvml = _import_pynvml()
        except ImportError:
            raise SensorError("nvml: pynvml is not installed (pip install nvidia-ml-py)") from None
        try:
            index = _gpu_index()
            nvml.nvmlInit()
        except Exception as exc:
            raise SensorError(f"nvml: cannot initialise: {exc}") from exc
        try:
            self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            _shutdown(nvml)
            raise SensorError(f"nvml: no GPU at {NVML_INDEX_ENV}={index}: {exc}") from exc
        self._has_energy = _has_energy_counter(nvml, self._handle)
        self._nvml = nvml

    def close(self) -> None:
        """Releases the NVML handle (NVML counts initialisations, so this is balanced)."""
        if self._nvml is not None:
            _shutdown(self._nvml)
        self._nvml = None
        self._handle = None

    def read_watts(self) -> float:
        """Returns the GPU's power draw in watts (NVML reports milliwatts).

        Raises:
            SensorError: NVML could not read the power.
        """
        nvml = self._opened()
        try:
            return nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
        except Exception as exc:
            raise SensorError(f"nvml: nvmlDeviceGetPowerUsage failed: {exc}") from exc

    def read_energy_j(self) -> Optional[float]:
        """Returns the GPU's total energy counter in joules, or None on GPUs without one.

        Raises:
            SensorError: the counter exists but could not be read.
        """
        nvml = self._opened()
        if not self._has_energy:
            return None
        try:
            return nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0
        except Exception as exc:
            raise SensorError(f"nvml: nvmlDeviceGetTotalEnergyConsumption failed: {exc}") from exc

    def _opened(self) -> ModuleType:
        if self._nvml is None:
            self.open()
        assert self._nvml is not None
        return self._nvml


def _has_energy_counter(nvml: ModuleType, handle: Any) -> bool:
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # NVMLError_NotSupported on GPUs older than Volta
        return False
    return True


def _shutdown(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # nothing useful to do if the driver refuses to shut down
        pass
