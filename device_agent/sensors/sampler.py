"""Sampling a power sensor in a thread during a measurement window.

`PowerSampler` reads `read_watts()` at a fixed rate in a daemon thread between `start()`
and `stop()` (or for `measure_idle(seconds)`). When the sensor has an energy counter, the
window's energy and mean power come from the counter difference, which is more accurate
than integrating samples; otherwise (no counter, or one that did not advance during the
window) from the samples (time-weighted trapezoid mean).
A window in which no sample could be read raises instead of returning zeros.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Optional

from device_agent.sensors.base import PowerSensor, SensorError

METHOD_SAMPLES = "samples"
METHOD_COUNTER = "energy-counter"


@dataclass(frozen=True)
class PowerWindow:
    """Power over one measurement window.

    Attributes:
        mean_w: mean power in watts.
        samples: number of successful `read_watts()` samples.
        duration_s: length of the window in seconds.
        energy_j: energy over the window in joules; None from a single sample (one
            instantaneous reading says nothing about energy over time).
        method: "energy-counter" (counter difference) or "samples".
        failed_reads: samples that raised or returned a non-finite value.
        watts: the raw samples in watts, in time order.
    """

    mean_w: float
    samples: int
    duration_s: float
    energy_j: Optional[float]
    method: str
    failed_reads: int = 0
    watts: tuple[float, ...] = ()


def energy_per_inference_mj(
    active: PowerWindow, idle: PowerWindow, window_s: float, runs: int
) -> float:
    """Returns the energy one inference adds above idle, in millijoules.

    The one definition of the figure: (active.mean_w - idle.mean_w) × window_s × 1000 / runs,
    the power above idle over the whole timed window shared among the runs in it. The window,
    not the mean invoke time, because the loop between runs (timing, bookkeeping, the
    runtime's own work outside invoke) draws that power too; for a model of microseconds the
    difference is large. Clamped at 0 when the active window drew less than idle (noise), so
    no negative energy is reported.

    Args:
        active: power during the timed window.
        idle: the idle baseline taken just before it.
        window_s: length of the timed window in seconds.
        runs: inferences in the window (> 0).

    Raises:
        ValueError: window_s is negative or not finite, or runs < 1.
    """
    if not math.isfinite(window_s) or window_s < 0:
        raise ValueError(f"window_s={window_s!r}: expected a finite value >= 0")
    if runs < 1:
        raise ValueError(f"runs={runs!r}: expected at least one inference in the window")
    return max(0.0, active.mean_w - idle.mean_w) * window_s * 1000.0 / runs


class PowerSampler:
    """Samples one sensor at a fixed rate in a daemon thread.

    The sampler opens the sensor at `start()` and closes it at `stop()`; one window at a
    time. Reused for several windows (idle baseline, then the timed runs).
    """

    def __init__(
        self,
        sensor: PowerSensor,
        rate_hz: Optional[float] = None,
        cpus: Optional[list[int]] = None,
    ) -> None:
        """Sets the sensor and the sampling rate.

        Args:
            sensor: the sensor to read.
            rate_hz: samples per second; default: the sensor's `default_rate_hz`.
            cpus: CPUs the sampling thread (and a command sensor's processes) runs on, e.g.
                those the benchmark is not pinned to; default: the process's own.

        Raises:
            ValueError: rate_hz is not a finite number > 0.
        """
        rate = sensor.default_rate_hz if rate_hz is None else float(rate_hz)
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"power sampling rate_hz={rate_hz!r}: expected a number > 0")
        self.sensor = sensor
        self.rate_hz = rate
        self.cpus = cpus
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._points: list[tuple[float, float]] = []  # (monotonic s, W)
        self._failures = 0
        self._first_error = ""
        self._t0 = 0.0
        self._energy0: Optional[float] = None

    def start(self) -> None:
        """Opens the sensor and starts sampling (the first sample is taken at once).

        Raises:
            RuntimeError: a window is already running.
            SensorError: the sensor could not be opened.
        """
        if self._thread is not None:
            raise RuntimeError(f"power sampler for {self.sensor.name} is already running")
        self.sensor.open()
        self._points, self._failures, self._first_error = [], 0, ""
        self._stop.clear()
        self._energy0 = self._read_counter()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name=f"edgeloop-power-{self.sensor.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> PowerWindow:
        """Stops sampling, closes the sensor and returns the window.

        Raises:
            RuntimeError: no window is running.
            SensorError: not one sample could be read; names the sensor and the first error.
        """
        if self._thread is None:
            raise RuntimeError(f"power sampler for {self.sensor.name} was not started")
        self._halt()
        t1 = time.monotonic()
        try:
            energy1 = self._read_counter()
        finally:
            self.sensor.close()
        return self._window(t1 - self._t0, energy1)

    def measure_idle(self, seconds: float) -> PowerWindow:
        """Samples for `seconds` (blocking) and returns the window, e.g. an idle baseline.

        Raises:
            ValueError: seconds is not a finite number > 0.
            SensorError: as `start` and `stop`.
        """
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"idle window seconds={seconds!r}: expected a number > 0")
        self.start()
        try:
            time.sleep(seconds)
        except BaseException:  # interrupted: end the thread and release the sensor, then re-raise
            self._halt()
            self.sensor.close()
            raise
        return self.stop()

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._thread = None

    def _read_counter(self) -> Optional[float]:
        try:
            return self.sensor.read_energy_j()
        except Exception:  # a counter that fails leaves the samples to decide
            return None

    def _run(self) -> None:
        if self.cpus:
            try:
                os.sched_setaffinity(0, self.cpus)  # 0: this thread
            except (AttributeError, OSError):
                pass  # sampled where the benchmark runs: still a valid reading
        period = 1.0 / self.rate_hz
        next_at = time.monotonic()
        while True:
            before = time.monotonic()
            try:
                watts = self.sensor.read_watts()
            except Exception as exc:  # recorded, the window decides whether it is usable
                self._fail(str(exc) or type(exc).__name__)
            else:
                if math.isfinite(watts):
                    self._points.append(((before + time.monotonic()) / 2, watts))
                else:
                    self._fail(f"{self.sensor.name} returned {watts!r} W")
            next_at += period
            now = time.monotonic()
            if next_at < now:  # a slow read: skip the slots it overran instead of bursting
                next_at += math.ceil((now - next_at) / period) * period
            if self._stop.wait(next_at - now):
                return

    def _fail(self, message: str) -> None:
        self._failures += 1
        if not self._first_error:
            self._first_error = message

    def _window(self, duration_s: float, energy1: Optional[float]) -> PowerWindow:
        points = self._points
        if not points:
            raise SensorError(
                f"power sensor {self.sensor.name}: no sample in {duration_s:.3f} s "
                f"({self._failures} failed reads; first: {self._first_error or 'none taken'})"
            )
        watts = tuple(w for _, w in points)
        e0 = self._energy0
        energy: Optional[float]
        if e0 is not None and energy1 is not None and energy1 > e0 and duration_s > 0:
            method, energy = METHOD_COUNTER, energy1 - e0
            mean = energy / duration_s
        elif len(points) == 1:
            method, energy, mean = METHOD_SAMPLES, None, watts[0]
        else:
            span = points[-1][0] - points[0][0]
            pairs = zip(points, points[1:])
            area = sum((t2 - t1) * (w1 + w2) / 2 for (t1, w1), (t2, w2) in pairs)
            mean = area / span if span > 0 else sum(watts) / len(watts)
            method, energy = METHOD_SAMPLES, mean * duration_s
        return PowerWindow(
            mean_w=mean,
            samples=len(points),
            duration_s=duration_s,
            energy_j=energy,
            method=method,
            failed_reads=self._failures,
            watts=watts,
        )
