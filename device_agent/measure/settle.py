"""Letting the device settle before a benchmark: a cooldown, then a wait for a start temperature.

Run by the agent (the parent) before it hands the job to a benchmark child, so the wait is
not part of the child's timeout and nothing runs meanwhile but the idle spare process.

- `cooldown_s`: sleep this long first.
- `max_start_temp_c`: then poll the device temperature (`sensors.thermal`) every
  `POLL_S` until it is at or below this. After `start_temp_timeout_s` the benchmark goes on
  anyway, with a warning in the result: a figure measured warm and flagged (the result also
  carries the temperature before the timed window) serves a lab better than no figure, and a
  tuner would otherwise rank a hot device's every candidate as failed. Where no temperature
  is readable the benchmark starts at once, with a warning saying so.

The time spent in both is reported as `ThermalStats.cooldown_waited_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from device_agent.protocol import edgeloop_pb2 as pb

POLL_S = 0.5
"""Seconds between temperature readings while waiting for `max_start_temp_c`."""
TICK_S = 0.25
"""Longest sleep between checks for cancellation (and progress events) while waiting."""
PHASE = "cooldown"
"""Progress phase while waiting; `done` is the whole seconds waited, `total` the cooldown."""

ReadTemperature = Callable[[], Optional[float]]


@dataclass
class Settled:
    """What the wait did.

    Attributes:
        waited_s: seconds spent in the cooldown and the temperature wait together.
        warnings: lines for the result's warnings.
        cancelled: the caller went away during the wait.
    """

    waited_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    cancelled: bool = False


def _read_temperature() -> Optional[float]:
    from device_agent.sensors.thermal import read_thermal

    return read_thermal().temperature_c


def settle(
    options: pb.BenchmarkOptions,
    on_progress: Optional[Callable[[pb.Progress], None]] = None,
    cancelled: Optional[Callable[[], bool]] = None,
    read_temperature: ReadTemperature = _read_temperature,
) -> Settled:
    """Waits as `options` asks (defaults already filled in); returns what it did, never raises.

    Args:
        options: `cooldown_s`, `max_start_temp_c` (0: no wait), `start_temp_timeout_s`.
        on_progress: receives "cooldown" progress events while waiting.
        cancelled: polled every `TICK_S`; when True the wait ends with `cancelled` set.
        read_temperature: the device temperature in °C, None when unreadable.
    """
    out = Settled()
    if options.cooldown_s <= 0 and options.max_start_temp_c <= 0:
        return out
    start = time.monotonic()

    def pause(seconds: float) -> bool:
        """Sleeps up to `seconds` in ticks; False when the caller cancelled."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if cancelled is not None and cancelled():
                out.cancelled = True
                return False
            if on_progress is not None:
                waited = time.monotonic() - start
                on_progress(
                    pb.Progress(
                        phase=PHASE,
                        done=int(waited),
                        total=int(options.cooldown_s),
                        elapsed_s=waited,
                    )
                )
            time.sleep(min(TICK_S, left))
        return True

    try:
        if options.cooldown_s > 0 and not pause(options.cooldown_s):
            return out
        limit_c = options.max_start_temp_c
        if limit_c > 0:
            began = time.monotonic()
            temperature = read_temperature()
            if temperature is None:
                out.warnings.append(
                    f"max_start_temp_c {limit_c:g} °C: no temperature is readable on this "
                    "device; started without waiting"
                )
            while temperature is not None and temperature > limit_c:
                left = options.start_temp_timeout_s - (time.monotonic() - began)
                if left <= 0:
                    out.warnings.append(
                        f"the device was still at {temperature:.1f} °C after waiting "
                        f"{options.start_temp_timeout_s:g} s to cool to {limit_c:g} °C "
                        "(max_start_temp_c); measured anyway"
                    )
                    break
                if not pause(min(POLL_S, left)):
                    return out
                temperature = read_temperature()
    finally:
        out.waited_s = time.monotonic() - start
    return out
