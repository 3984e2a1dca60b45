"""The serial line to a DUT (pyserial): open/close, write a command, read lines by a deadline."""

from __future__ import annotations

import time
from typing import Optional

from device_agent.serial_dut.protocol import MAX_LINE_BYTES

DEFAULT_BAUD = 115_200


class SerialLinkError(OSError):
    """The port cannot be opened or used (missing, busy, no permission, unplugged)."""


class LineTimeout(TimeoutError):
    """No complete line arrived before the deadline."""


def parse_port_spec(spec: str) -> tuple[str, int]:
    """``PORT[:BAUD]`` -> (port, baud); ValueError naming the spec when BAUD is not a number."""
    port, sep, baud = spec.rpartition(":")
    if sep and baud.isdigit() and port:
        if int(baud) <= 0:
            raise ValueError(f"{spec!r}: baud must be a positive number")
        return port, int(baud)
    if sep and port and not baud.isdigit() and "/" not in baud:
        raise ValueError(f"{spec!r}: expected PORT[:BAUD] with BAUD a number, got {baud!r}")
    return spec, DEFAULT_BAUD


class SerialLink:
    """One open serial port. Lines end with ``\\n``; ``\\r`` is stripped by the protocol layer.

    Args:
        port: device path (``/dev/ttyACM0``, a pty's ``/dev/pts/N``, ``COM3``).
        baud: bits per second (a pseudo-terminal ignores it).
    """

    def __init__(self, port: str, baud: int = DEFAULT_BAUD) -> None:
        try:
            import serial
        except ImportError:
            raise SerialLinkError(
                f"{port}: pyserial is not installed here (pip install 'edgeloop[serial]')"
            ) from None
        self.port, self.baud = port, baud
        try:
            # exclusive: a second process (another agent, a host run) cannot talk over this one
            self._serial = serial.Serial(
                port, baud, timeout=0.05, write_timeout=5.0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SerialLinkError(
                f"{port}: cannot open serial port at {baud} baud: {_reason(exc)}"
            ) from None
        self._pending = bytearray()
        self.bytes_written = 0
        self.bytes_read = 0

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._serial.write(data)
            self._serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise SerialLinkError(f"{self.port}: write failed: {_reason(exc)}") from None
        self.bytes_written += len(data)

    def read_line(self, deadline: float) -> bytes:
        """The next line without its ``\\n`` (a line over MAX_LINE_BYTES is cut there and
        returned as is); LineTimeout when none completes by `deadline` (time.monotonic)."""
        import serial

        while True:
            end = self._pending.find(b"\n")
            if end >= 0 or len(self._pending) >= MAX_LINE_BYTES:
                cut = end if end >= 0 else MAX_LINE_BYTES
                line = bytes(self._pending[:cut])
                del self._pending[: cut + (1 if end >= 0 else 0)]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise LineTimeout(self.port)
            wait = min(left, 0.05)
            if self._serial.timeout != wait:  # pyserial reconfigures the port on every set
                self._serial.timeout = wait
            try:
                waiting = self._serial.in_waiting
                chunk = self._serial.read(max(1, min(waiting, 4096)))
            except (serial.SerialException, OSError) as exc:
                raise SerialLinkError(f"{self.port}: read failed: {_reason(exc)}") from None
            self.bytes_read += len(chunk)
            self._pending += chunk

    def partial(self) -> bytes:
        """Bytes received after the last complete line."""
        return bytes(self._pending)

    def drain(self, quiet_s: float = 0.05, limit_s: float = 2.0) -> bytes:
        """Discards what the DUT sends until it has been quiet for `quiet_s` (at most
        `limit_s`): boot banners, the tail of an earlier reply. Returns what was dropped."""
        import serial

        dropped = bytearray(self._pending)
        self._pending.clear()
        stop = time.monotonic() + limit_s
        quiet_until = time.monotonic() + quiet_s
        self._serial.timeout = min(quiet_s, 0.05)
        while time.monotonic() < stop:
            try:
                chunk = self._serial.read(4096)
            except (serial.SerialException, OSError) as exc:
                raise SerialLinkError(f"{self.port}: read failed: {_reason(exc)}") from None
            if chunk:
                dropped += chunk
                quiet_until = time.monotonic() + quiet_s
            elif time.monotonic() >= quiet_until:
                break
        return bytes(dropped)

    def close(self) -> None:
        try:
            self._serial.close()
        except Exception:  # noqa: BLE001 - closing a port that vanished
            pass

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    errno: Optional[int] = getattr(exc, "errno", None)
    return text if errno is None else text.split("] ", 1)[-1]
