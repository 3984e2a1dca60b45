"""Finding DUTs: serial ports (pyserial `list_ports`), their USB VID:PID matched against a
small table of boards that carry a USB serial bridge, and a handshake to see who answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from device_agent.serial_dut import protocol as p
from device_agent.serial_dut.link import DEFAULT_BAUD, SerialLinkError
from device_agent.serial_dut.session import DutSession, DutTimeouts

KNOWN_BOARDS: dict[str, str] = {
    "0483:374b": "ST-LINK/V2-1 (STM32 Nucleo-64/144, Discovery)",
    "0483:374e": "STLINK-V3E (STM32 Nucleo, e.g. NUCLEO-L4R5ZI, NUCLEO-H563ZI)",
    "0483:3752": "STLINK-V3 (STM32 Discovery kits)",
    "0483:3754": "STLINK-V3 (STM32 Nucleo / Discovery)",
    "0d28:0204": "Arm DAPLink / Mbed CMSIS-DAP",
    "1366:1015": "SEGGER J-Link OB (Nordic nRF52/nRF53 DK)",
    "1366:0105": "SEGGER J-Link OB (Nordic nRF DK)",
    "2341:805a": "Arduino Nano 33 BLE (Sense)",
    "2341:0043": "Arduino Uno",
    "2e8a:000a": "Raspberry Pi Pico (SDK USB serial)",
    "303a:1001": "Espressif USB serial/JTAG (ESP32-S3 / C3)",
    "10c4:ea60": "Silicon Labs CP210x USB-UART bridge",
    "1a86:7523": "WCH CH340 USB-UART bridge",
    "0403:6001": "FTDI FT232R USB-UART bridge",
    "0403:6010": "FTDI FT2232 USB-UART bridge",
    "0403:6014": "FTDI FT232H USB-UART bridge",
}
"""USB VID:PID (lower-case hex) of boards and bridges a benchmark firmware is often reached
through; a user adds others with `extra`."""

PROBE_TIMEOUTS = DutTimeouts(reply_s=0.5, infer_s=0.5, settle_s=0.1)


@dataclass(frozen=True)
class SerialPort:
    """One serial port as the operating system lists it."""

    port: str
    usb_vid_pid: str = ""  # "0483:374b"; "" when not a USB device
    description: str = ""
    serial_number: str = ""
    board: str = ""  # from KNOWN_BOARDS or the user's table; "" when unknown

    @property
    def known(self) -> bool:
        return bool(self.board)


@dataclass(frozen=True)
class ProbeResult:
    """Whether a DUT answered the handshake on a port."""

    port: str
    baud: int
    answered: bool
    identity: Optional[p.DutIdentity] = None
    reason: str = ""  # why not


def parse_vid_pid(text: str) -> str:
    """``VID:PID`` (hex) -> normalised ``"0483:374b"``; ValueError naming the text."""
    vid, sep, pid = text.strip().lower().partition(":")
    try:
        if not sep or not 0 <= int(vid, 16) <= 0xFFFF or not 0 <= int(pid, 16) <= 0xFFFF:
            raise ValueError
    except ValueError:
        raise ValueError(f"{text!r}: expected a USB VID:PID in hex, e.g. 0483:374b") from None
    return f"{int(vid, 16):04x}:{int(pid, 16):04x}"


def list_serial_ports(extra: Optional[dict[str, str]] = None) -> list[SerialPort]:
    """Every serial port the OS lists, with the board its VID:PID names (KNOWN_BOARDS plus
    `extra`, VID:PID -> label)."""
    from serial.tools import list_ports

    table = {**KNOWN_BOARDS, **{parse_vid_pid(k): v for k, v in (extra or {}).items()}}
    found = []
    for info in sorted(list_ports.comports(), key=lambda i: i.device):
        vid_pid = f"{info.vid:04x}:{info.pid:04x}" if info.vid is not None else ""
        found.append(
            SerialPort(
                port=info.device,
                usb_vid_pid=vid_pid,
                description=info.description if info.description != "n/a" else "",
                serial_number=info.serial_number or "",
                board=table.get(vid_pid, ""),
            )
        )
    return found


def usb_vid_pid_of(port: str) -> str:
    """The VID:PID of `port` when the OS lists it as a USB device, else ""."""
    return next((s.usb_vid_pid for s in list_serial_ports() if s.port == port), "")


def probe(
    port: str, baud: int = DEFAULT_BAUD, timeouts: DutTimeouts = PROBE_TIMEOUTS
) -> ProbeResult:
    """Opens `port`, runs the handshake, closes it; never raises for what the port does."""
    try:
        with DutSession.open(port, baud, timeouts) as session:
            identity = session.identify()
    except (p.DutProtocolError, SerialLinkError) as exc:
        return ProbeResult(port, baud, False, reason=str(exc))
    return ProbeResult(port, baud, True, identity)
