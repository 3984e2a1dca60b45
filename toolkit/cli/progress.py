"""A one-line progress display for device-side work (stderr; quiet when not a terminal)."""

from __future__ import annotations

import sys
import time

from device_agent.protocol import edgeloop_pb2 as pb

BAR_WIDTH = 24


class ProgressLine:
    """Renders benchmark progress events as one updating line: phase, bar, counts, seconds."""

    def __init__(self, label: str, stream=None, enabled: bool = True) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.enabled = enabled
        self.phase = ""
        self.started = time.monotonic()

    def __call__(self, p: pb.Progress) -> None:
        if not self.enabled:
            return
        if not self.tty:
            if p.phase != self.phase:
                self.phase = p.phase
                self.stream.write(f"{self.label}: {p.phase}\n")
                self.stream.flush()
            return
        self.phase = p.phase
        if p.phase == "queued":
            text = f"queued, {p.total} ahead"
        elif p.total:
            filled = min(BAR_WIDTH, int(BAR_WIDTH * p.done / p.total))
            bar = "█" * filled + "░" * (BAR_WIDTH - filled)
            text = f"{p.phase:<7} {bar} {p.done}/{p.total}+ runs"
        else:
            text = f"{p.phase:<7} {p.done}"
        elapsed = time.monotonic() - self.started
        self.stream.write(f"\r\033[K{self.label}: {text}  {elapsed:5.1f}s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


class FleetProgress:
    """Where a fleet job stands, on stderr: "validate: 12 done, 1 failed, 187 remaining".

    On a terminal it is one updating line; otherwise each device's outcome is a line of its own
    (a CI log), with the tally after it. Call it with a device's one-line outcome and a tally
    (anything with done, failed, remaining and in_flight, e.g. toolkit.devices.parallel.Tally).
    """

    def __init__(self, label: str, total: int, stream=None, enabled: bool = True) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.started = time.monotonic()

    def __call__(self, line: str, tally) -> None:  # noqa: ANN001 - a Tally
        if not self.enabled:
            return
        counts = (
            f"{tally.done} done, {tally.failed} failed, {tally.remaining} remaining "
            f"of {self.total} ({tally.in_flight} in flight)"
        )
        elapsed = time.monotonic() - self.started
        if self.tty:
            if line and "FAIL" in line:  # a failure stays on screen; passes only count
                self.stream.write(f"\r\033[K  {line}\n")
            self.stream.write(f"\r\033[K{self.label}: {counts}  {elapsed:5.1f}s")
        else:
            self.stream.write(f"  {line}  [{counts}, {elapsed:.1f}s]\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
