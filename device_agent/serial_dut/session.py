"""A conversation with one DUT: handshake, input upload, inference, results.

Every command waits for its ``m-ready`` within a deadline. A reply with a garbled line (noise
on the wire) is retried once — the whole upload for ``db`` commands, which are not
idempotent; a second garbled reply, a refusal (``e-[...]``), an answer outside the protocol
or silence raise a DutProtocolError naming the port, the command, what was expected and what
came.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, TypeVar

from device_agent.serial_dut import protocol as p
from device_agent.serial_dut.link import DEFAULT_BAUD, LineTimeout, SerialLink

T = TypeVar("T")


@dataclass(frozen=True)
class DutTimeouts:
    """Deadlines in seconds.

    Attributes:
        reply_s: a whole reply to name/profile/db/results (default 2 s).
        infer_s: a whole ``infer`` reply, all its runs included (default 60 s).
        settle_s: quiet time the DUT must keep before the first command (boot banner;
            boards that reset when the port opens need ~2 s; default 0.1 s).
    """

    reply_s: float = 2.0
    infer_s: float = 60.0
    settle_s: float = 0.1


@dataclass
class Traffic:
    """What one command cost on the wire and on the host's clock."""

    bytes_out: int = 0
    bytes_in: int = 0
    seconds: float = 0.0


class DutSession:
    """Talks the DUT protocol over an open SerialLink.

    Args:
        link: the open port.
        timeouts: deadlines (DutTimeouts).
    """

    def __init__(self, link: SerialLink, timeouts: Optional[DutTimeouts] = None) -> None:
        self.link = link
        self.timeouts = timeouts or DutTimeouts()
        self.retries = 0  # commands sent again after a garbled reply
        self.last = Traffic()

    @classmethod
    def open(
        cls, port: str, baud: int = DEFAULT_BAUD, timeouts: Optional[DutTimeouts] = None
    ) -> DutSession:
        """Opens the port and lets the DUT settle (SerialLinkError when it cannot open)."""
        timeouts = timeouts or DutTimeouts()
        link = SerialLink(port, baud)
        link.drain(quiet_s=timeouts.settle_s, limit_s=max(2.0, 4 * timeouts.settle_s))
        return cls(link, timeouts)

    @property
    def port(self) -> str:
        return self.link.port

    # -- one command -------------------------------------------------------------
    def send(self, command: str, timeout_s: float) -> p.Reply:
        """Sends one command and reads its reply up to ``m-ready``.

        Raises:
            DutTimeoutError: no ``m-ready`` within `timeout_s` (silent, or stopped mid-reply).
            DutProtocolError: lines came, none of them protocol lines, and no ``m-ready``.
        """
        out, start = self.link.bytes_written, time.perf_counter()
        read_before = self.link.bytes_read
        self.link.write(p.command_text(command))
        deadline = time.monotonic() + timeout_s
        lines: list[str] = []
        garbled: list[bytes] = []
        while True:
            try:
                raw = self.link.read_line(deadline)
            except LineTimeout:
                raise self._no_ready(command, timeout_s, lines, garbled) from None
            text = p.decode_line(raw)
            if text is None:
                garbled.append(raw)
            elif text == p.READY:
                break
            elif text:
                lines.append(text)
        self.last = Traffic(
            self.link.bytes_written - out,
            self.link.bytes_read - read_before,
            time.perf_counter() - start,
        )
        return p.Reply(command, tuple(lines), tuple(garbled))

    def _no_ready(
        self, command: str, timeout_s: float, lines: list[str], garbled: list[bytes]
    ) -> p.DutProtocolError:
        partial = self.link.partial()
        if lines and not any(p.is_protocol_line(line) for line in lines):
            return p.DutProtocolError(
                self.port,
                command,
                "m-... lines ending in m-ready",
                p.shorten(lines),
                "not an MLPerf Tiny DUT? check the port and baud rate",
            )
        if not lines and not garbled and not partial:
            return p.DutTimeoutError(
                self.port,
                command,
                f"a reply ending in m-ready within {timeout_s:g} s",
                "",
                f"the DUT is silent at {self.link.baud} baud: is it connected, powered and "
                "running the benchmark firmware?",
            )
        got = p.shorten(
            lines + [repr(g[:40]) for g in garbled] + ([repr(partial[:40])] if partial else [])
        )
        return p.DutTimeoutError(
            self.port, command, f"m-ready within {timeout_s:g} s", got, "the DUT stopped mid-reply"
        )

    def _once_more(self, action: Callable[[], T]) -> T:
        """Runs `action`; after a garbled reply, drains the line and runs it once more."""
        try:
            return action()
        except p.GarbledLineError:
            self.retries += 1
            self.link.drain(quiet_s=0.05, limit_s=self.timeouts.reply_s)
            return action()

    # -- the protocol --------------------------------------------------------------
    def identify(self) -> p.DutIdentity:
        """``name%`` then ``profile%`` (the handshake)."""
        device, vendor = self._once_more(
            lambda: p.parse_name(self.port, self.send("name", self.timeouts.reply_s))
        )
        try:
            firmware, model = self._once_more(
                lambda: p.parse_profile(self.port, self.send("profile", self.timeouts.reply_s))
            )
        except p.DutRefusedError:  # firmware without the profile command
            firmware, model = "", ""
        return p.DutIdentity(device, vendor, firmware, model)

    def load_input(self, data: bytes) -> Traffic:
        """Uploads one input: ``db load N%`` and ``db HEX%`` chunks, ending in m-load-done."""

        def upload() -> Traffic:
            total = Traffic()
            commands = p.db_commands(data)
            for i, command in enumerate(commands):
                reply = self.send(command, self.timeouts.reply_s)
                total.bytes_out += self.last.bytes_out
                total.bytes_in += self.last.bytes_in
                total.seconds += self.last.seconds
                if i == 0:
                    p.parse_expecting(self.port, reply, len(data))
                elif i == len(commands) - 1:
                    p.parse_load_done(self.port, reply)
                else:
                    p.check_refusal(self.port, reply)
                    if reply.garbled:
                        raise p.GarbledLineError(
                            self.port,
                            command,
                            "no reply lines",
                            p.shorten([repr(g) for g in reply.garbled]),
                        )
            return total

        return self._once_more(upload)

    def infer(self, runs: int, warmups: int, timeout_s: float | None = None) -> p.InferReport:
        """``infer N W%``: W untimed, then N runs timed by the DUT."""
        if runs < 1 or warmups < 0:
            raise ValueError(f"infer: runs must be >= 1 and warm-ups >= 0, got {runs}, {warmups}")
        limit = timeout_s if timeout_s is not None else self.timeouts.infer_s
        return self._once_more(
            lambda: p.parse_infer(
                self.port, self.send(f"infer {runs} {warmups}", limit), runs, warmups
            )
        )

    def results(self) -> tuple[float, ...]:
        """``results%``: the output vector of the last inference."""
        return self._once_more(
            lambda: p.parse_results(self.port, self.send("results", self.timeouts.reply_s))
        )

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> DutSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
