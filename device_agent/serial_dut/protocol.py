"""The MLPerf Tiny / EEMBC EnergyRunner device-under-test (DUT) protocol: commands, replies
and the errors a host sees, as the reference firmware (mlcommons/tiny `benchmark/api`) speaks it.

A command is ASCII text ended by ``%`` (no newline needed); the DUT keeps at most
`MAX_COMMAND_CHARS` of it. The DUT answers with lines ended by ``\\r\\n``: ``m-...`` lines carry
data, ``e-[...]`` lines report a refused command, and every command's reply ends with
``m-ready``. Firmware may print other free text (debug output) in between.

==================  =====================================================================
command             reply lines before ``m-ready``
==================  =====================================================================
``name%``           ``m-name-dut-[VENDOR]``
``profile%``        ``m-profile-[FIRMWARE]``, ``m-model-[MODEL]``
``db load N%``      ``m-[Expecting N bytes]``
``db HEX%``         nothing, or ``m-load-done`` once all N bytes arrived
``infer N W%``      ``m-warmup-start-W``, ``m-warmup-done``, ``m-infer-start-N``,
                    ``m-lap-us-T0``, ``m-lap-us-T1``, ``m-infer-done``, ``m-results-[...]``
``results%``        ``m-results-[v0,v1,...]``
==================  =====================================================================

The DUT times itself: ``m-lap-us-`` is its microsecond timer (an unsigned 32-bit counter
that wraps) read before and after the N timed inferences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COMMAND_END = "%"
READY = "m-ready"
MAX_COMMAND_CHARS = 80
"""The reference firmware's command buffer (EE_CMD_SIZE): longer commands are cut."""
DB_CHUNK_BYTES = 31
"""Input bytes per ``db`` command: ``db `` + 62 hex digits stays under MAX_COMMAND_CHARS
(the MLPerf runner sends 31, or 26 when an energy monitor relays the line)."""
TIMER_WRAP = 2**32
MAX_LINE_BYTES = 4096
"""A reply line longer than this is garbage (a device streaming without newlines)."""

_NAME = re.compile(r"^m-name-(?P<device>[^-\[]+)-\[(?P<vendor>[^\]]*)\]$")
_PROFILE = re.compile(r"^m-(?P<key>profile|model)-\[(?P<value>[^\]]*)\]$")
_EXPECTING = re.compile(r"^m-\[Expecting (?P<n>\d+) bytes\]$")
_LAP = re.compile(r"^m-lap-us-(?P<us>\d+)$")
_RESULTS = re.compile(r"^m-results-\[(?P<values>[^\]]*)\]$")
_ERROR = re.compile(r"^e-\[(?P<message>.*)\]$")
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


class DutProtocolError(Exception):
    """The DUT answered outside the protocol (or refused a command).

    Attributes:
        port: the serial port, e.g. ``/dev/ttyACM0``.
        command: the command sent, without ``%``.
        expected: what the protocol calls for at this point.
        got: what came (lines, shortened), or "" when nothing came.
    """

    def __init__(
        self, port: str, command: str, expected: str, got: str = "", note: str = ""
    ) -> None:
        self.port, self.command, self.expected, self.got = port, command, expected, got
        text = f"{port}: `{command}%`: expected {expected}, got {got or 'nothing'}"
        super().__init__(text + (f" ({note})" if note else ""))


class DutTimeoutError(DutProtocolError, TimeoutError):
    """The DUT did not finish its reply (``m-ready``) in time: silent, or stopped mid-reply."""


class DutRefusedError(DutProtocolError):
    """The DUT answered ``e-[...]``: it understood the protocol but refused the command."""


class GarbledLineError(DutProtocolError):
    """A reply line was not clean ASCII, or an ``m-`` line it needs did not parse (noise on
    the line). The session retries the command once."""


@dataclass(frozen=True)
class Reply:
    """One command's reply: its lines up to (not including) ``m-ready``, decoded."""

    command: str
    lines: tuple[str, ...]
    garbled: tuple[bytes, ...] = ()  # lines that were not clean ASCII

    def first(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        return next((m for m in map(pattern.match, self.lines) if m), None)

    def all(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return [m for m in map(pattern.match, self.lines) if m]


@dataclass(frozen=True)
class DutIdentity:
    """What a DUT says about itself (``name%`` and ``profile%``)."""

    device: str  # "dut" in the reference firmware
    vendor: str
    firmware: str = ""  # m-profile-[...]
    model: str = ""  # m-model-[...]: the model compiled into it


@dataclass(frozen=True)
class InferReport:
    """One ``infer N W%``: the DUT's own timing of N inferences, and its results vector."""

    runs: int
    warmups: int
    start_us: int
    end_us: int
    results: tuple[float, ...] = ()
    notes: tuple[str, ...] = field(default=())  # free-text lines the firmware printed

    @property
    def elapsed_us(self) -> int:
        """end - start on the DUT's timer, across one wrap of its 32-bit counter."""
        return (self.end_us - self.start_us) % TIMER_WRAP

    @property
    def per_inference_ms(self) -> float:
        return self.elapsed_us / self.runs / 1000.0


def command_text(command: str) -> bytes:
    """The bytes sent for `command` (without its ``%``); ValueError when it is too long."""
    if len(command) > MAX_COMMAND_CHARS or COMMAND_END in command:
        raise ValueError(
            f"DUT command {command[:20]!r}...: over {MAX_COMMAND_CHARS} characters "
            "or containing '%'"
        )
    return (command + COMMAND_END).encode("ascii")


def db_commands(data: bytes, chunk: int = DB_CHUNK_BYTES) -> list[str]:
    """``db load N`` then the ``db HEX`` commands that carry `data` in chunks."""
    if not data:
        raise ValueError("no input bytes to load")
    return [f"db load {len(data)}"] + [
        f"db {data[i : i + chunk].hex()}" for i in range(0, len(data), chunk)
    ]


def decode_line(raw: bytes) -> str | None:
    """A reply line as text (``\\r``/``\\0`` stripped), or None when it is not clean ASCII."""
    raw = raw.strip(b"\r\0")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _PRINTABLE.match(text) else None


def is_protocol_line(text: str) -> bool:
    return text.startswith("m-") or text.startswith("e-")


def shorten(lines: tuple[str, ...] | list[str], limit: int = 3) -> str:
    shown = [repr(line[:60]) for line in lines[:limit]]
    more = f" (+{len(lines) - limit} more)" if len(lines) > limit else ""
    return ", ".join(shown) + more


def check_refusal(port: str, reply: Reply) -> None:
    """DutRefusedError when the reply carries an ``e-[...]`` line."""
    refused = reply.first(_ERROR)
    if refused:
        raise DutRefusedError(
            port, reply.command, "no e-[...] line", f"e-[{refused.group('message')}]"
        )


def parse_name(port: str, reply: Reply) -> tuple[str, str]:
    """(device, vendor) from ``m-name-dut-[VENDOR]``."""
    check_refusal(port, reply)
    match = reply.first(_NAME)
    if match is None:
        raise _not_found(port, reply, "m-name-dut-[VENDOR]")
    return match.group("device"), match.group("vendor")


def parse_profile(port: str, reply: Reply) -> tuple[str, str]:
    """(firmware, model) from ``m-profile-[...]`` and ``m-model-[...]`` (either may be "")."""
    check_refusal(port, reply)
    found = {m.group("key"): m.group("value") for m in reply.all(_PROFILE)}
    if not found:
        raise _not_found(port, reply, "m-profile-[...] / m-model-[...]")
    return found.get("profile", ""), found.get("model", "")


def parse_expecting(port: str, reply: Reply, size: int) -> None:
    """Checks ``m-[Expecting N bytes]`` with N == size."""
    check_refusal(port, reply)
    match = reply.first(_EXPECTING)
    if match is None or int(match.group("n")) != size:
        raise _not_found(port, reply, f"m-[Expecting {size} bytes]")


def parse_load_done(port: str, reply: Reply) -> None:
    check_refusal(port, reply)
    if "m-load-done" not in reply.lines:
        raise _not_found(port, reply, "m-load-done after the last db chunk")


def parse_results(port: str, reply: Reply) -> tuple[float, ...]:
    """The floats of ``m-results-[v0,v1,...]``."""
    check_refusal(port, reply)
    match = reply.first(_RESULTS)
    if match is None:
        raise _not_found(port, reply, "m-results-[v0,v1,...]")
    try:
        return tuple(float(v) for v in match.group("values").split(",") if v.strip())
    except ValueError:
        raise GarbledLineError(
            port, reply.command, "m-results-[comma-separated numbers]", repr(match.group(0)[:80])
        ) from None


def parse_infer(port: str, reply: Reply, runs: int, warmups: int) -> InferReport:
    """The DUT's two timer readings around the timed runs, and its results vector."""
    check_refusal(port, reply)
    if reply.first(re.compile(rf"^m-infer-start-{runs}$")) is None:
        raise _not_found(port, reply, f"m-infer-start-{runs}")
    laps = reply.all(_LAP)
    if len(laps) != 2 or "m-infer-done" not in reply.lines:
        raise _not_found(port, reply, "two m-lap-us-N lines and m-infer-done")
    results = parse_results(port, reply) if reply.first(_RESULTS) else ()
    notes = tuple(line for line in reply.lines if not is_protocol_line(line))
    return InferReport(
        runs, warmups, int(laps[0].group("us")), int(laps[1].group("us")), results, notes
    )


def _not_found(port: str, reply: Reply, expected: str) -> DutProtocolError:
    """The error for a reply that lacks `expected`: garbled (retried) when a line of it was
    noise or an m- line of the right kind did not parse, else 'answered something else'."""
    if reply.garbled or any(line.startswith("m-") and not _known(line) for line in reply.lines):
        got = shorten([repr(g[:40]) for g in reply.garbled] + list(reply.lines))
        return GarbledLineError(port, reply.command, expected, got)
    protocol = [line for line in reply.lines if is_protocol_line(line)]
    note = "" if protocol else "not an MLPerf Tiny DUT? check the port and baud rate"
    return DutProtocolError(port, reply.command, expected, shorten(reply.lines), note)


_KNOWN = (
    _NAME,
    _PROFILE,
    _EXPECTING,
    _LAP,
    _RESULTS,
    re.compile(r"^m-(ready|load-done|infer-done|warmup-done|init-done)$"),
    re.compile(r"^m-(infer|warmup)-start-\d+$"),
    re.compile(r"^m-timestamp-mode-\w+$"),
    re.compile(r"^m-buffer-[0-9a-fA-F-]+$"),
    re.compile(r"^m-\[.*\]$"),
)


def _known(line: str) -> bool:
    """Whether an m- line has a shape the protocol defines (else it is noise)."""
    return any(p.match(line) for p in _KNOWN)
