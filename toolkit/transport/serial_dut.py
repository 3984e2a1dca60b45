"""Microcontrollers over a serial line (MLPerf Tiny DUT protocol), from the host.

Two ways to reach one, both giving the same Measurement as any device:

- transport `serial` (`SerialDutClient`): the DUT hangs off this host's port (profile field
  `serial: {port, baud}`); the host runs the agent's own DUT code (`device_agent.serial_dut`),
  no agent process;
- through a gateway's agent (`GatewayTargetClient`): the agent was started with
  `--serial-dut PORT`, lists the DUT in GetInfo as an attached device, and measures it when a
  Benchmark names it in `target` (profile field `target:`, or `edgeloop profile --target`).

The model is compiled into the DUT's firmware: the host sends inputs made from the .tflite's
input spec and reads the DUT's own timing; `latency` is the DUT's timer, the host's clock per
infer command is `host_round_trip_p50_ms`. No memory or power figure comes back (the DUT
reports none, and no energy meter is read).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Union

from device_agent import __version__ as AGENT_VERSION
from device_agent.protocol import PROTOCOL_VERSION
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.serial_dut import protocol as dut_protocol
from device_agent.serial_dut.bench import DUT_RUNTIME, benchmark_dut
from device_agent.serial_dut.link import SerialLinkError
from device_agent.serial_dut.session import DutSession, DutTimeouts
from toolkit.devices.info import DeviceInfo, RuntimeOnDevice
from toolkit.devices.profile import DeviceProfile, SerialConfig
from toolkit.errors import (
    AgentError,
    AgentTimeoutError,
    AgentUnreachableError,
    ConfigError,
    ErrorKind,
)
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.transport.model_file import file_sha256, model_format

OnProgress = Callable[[pb.Progress], None]


def _dut_error(name: str, exc: Exception) -> AgentError:
    """Our host error for a DUT fault at connect time (port, handshake)."""
    if isinstance(exc, SerialLinkError):
        return AgentUnreachableError(f"device {name}: {exc}")
    if isinstance(exc, dut_protocol.DutTimeoutError):
        return AgentTimeoutError(f"device {name}: {exc}", kind=ErrorKind.DEVICE_PROTOCOL)
    return AgentError(f"device {name}: {exc}", kind=ErrorKind.DEVICE_PROTOCOL)


def _dut_info(
    device_id: str, address: str, identity: dut_protocol.DutIdentity, hostname: str
) -> DeviceInfo:
    return DeviceInfo(
        device_id=device_id,
        hostname=hostname,
        arch="mcu",
        os=identity.firmware,
        cpu_model=f"{identity.device}-[{identity.vendor}]",
        cpu_cores=0,
        memory_total_bytes=0,
        agent_version=AGENT_VERSION,
        protocol_version=PROTOCOL_VERSION,
        python_version="",
        disk_free_bytes=0,
        cache_used_bytes=0,
        cache_quota_bytes=0,
        max_model_bytes=0,
        runtimes=(
            RuntimeOnDevice(DUT_RUNTIME, True, version=identity.firmware, module=identity.model),
        ),
        address=address,
    )


def _tflite_bytes(model: Union[str, Path]) -> tuple[Path, bytes]:
    path = Path(model)
    if model_format(path) != "tflite":  # ModelFileError on a missing or foreign file
        raise ConfigError(
            f"{path}: a DUT runs the .tflite compiled into its firmware; give "
            "that .tflite (its input spec makes the inputs)"
        )
    return path, path.read_bytes()


def _no_infer(name: str) -> AgentError:
    """What either DUT client raises for Infer: the DUT protocol only benchmarks here."""
    return AgentError(
        f"device {name}: Infer is not available over the DUT protocol here (only benchmarks)"
    )


class SerialDutClient:
    """Transport `serial`: the subset of DeviceClient a DUT on this host's port supports.

    Opens the port and runs the handshake on creation; AgentUnreachableError when the port
    cannot be opened, AgentError (kind DEVICE_PROTOCOL) when the DUT answers outside the
    protocol, AgentTimeoutError when it is silent.
    """

    def __init__(self, config: SerialConfig, name: str = "") -> None:
        self.config = config
        self.address = f"serial:{config.port}"
        self.name = name or self.address
        timeouts = DutTimeouts(config.reply_timeout_s, config.infer_timeout_s, config.settle_s)
        try:
            self.session = DutSession.open(config.port, config.baud, timeouts)
        except SerialLinkError as exc:
            raise _dut_error(self.name, exc) from None
        try:
            self.identity = self.session.identify()
        except dut_protocol.DutProtocolError as exc:
            self.session.close()
            raise _dut_error(self.name, exc) from None
        self._info = _dut_info(self.address, self.address, self.identity, platform.node())

    def info(self, refresh: bool = False) -> DeviceInfo:
        return self._info

    def has_model(self, sha256: str) -> bool:
        return False  # nothing is stored on a DUT: its model is in the firmware

    def push(self, path: Union[str, Path], name: Optional[str] = None) -> str:
        """Sends nothing (the model is compiled into the firmware); returns the file's sha256."""
        return file_sha256(_tflite_bytes(path)[0])

    def benchmark(
        self,
        model: Union[str, Path],
        options: Optional[BenchmarkOptions] = None,
        on_progress: Optional[OnProgress] = None,
        name: str = "",
    ) -> Measurement:
        """Measures the DUT with inputs made from `model` (the .tflite in its firmware).

        A DUT fault mid-run comes back as a Measurement with ok=False (DEVICE_PROTOCOL or
        TIMEOUT), as over gRPC.
        """
        options = options or BenchmarkOptions()
        options.validate()
        path, data = _tflite_bytes(model)
        result = benchmark_dut(self.session, options.to_proto(), data, on_progress)
        result.sha256 = file_sha256(path)
        reported = self.identity.model
        if reported and reported not in (path.name, path.stem):
            result.warnings.append(
                f"the DUT reports model {reported!r}; inputs were made from {path.name}"
            )
        return Measurement.from_proto(
            result, self._info, model_name=name or path.name, requested=options
        )

    def infer(self, *_args: Any, **_kwargs: Any) -> list:
        raise _no_infer(self.name)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> SerialDutClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_serial_client(profile: DeviceProfile) -> Iterator[SerialDutClient]:
    if profile.serial is None:
        raise ConfigError(
            f"{profile.source or profile.name}: serial: transport serial needs "
            "a serial section with 'port'"
        )
    with SerialDutClient(profile.serial, name=profile.name) as client:
        yield client


class GatewayTargetClient:
    """A DUT attached to a gateway's agent, reached through that agent's client.

    Benchmarks are sent with `target` set; the agent runs them on its serial port. (The
    agent keeps no job for a target run, so it is not reattached after a lost link.)

    Raises:
        AgentError: the agent lists no attached device `target`, or lists it unavailable.
    """

    def __init__(self, client: Any, target: str) -> None:
        self.client, self.target = client, target
        self.address = client.address
        self.name = f"{client.name}/{target}"
        listed = client.attached_devices()
        found = next((a for a in listed if target in (a.id, a.port)), None)
        if found is None:
            known = ", ".join(a.id for a in listed) or "none"
            raise AgentError(
                f"device {client.name}: no attached device {target!r} "
                f"(attached: {known}; start its agent with --serial-dut PORT)",
                kind=ErrorKind.BAD_REQUEST,
            )
        if not found.available:
            raise AgentError(
                f"device {self.name}: attached device unavailable: {found.reason}",
                kind=ErrorKind.DEVICE_PROTOCOL,
            )
        self.attached = found
        gateway = client.info()
        identity = dut_protocol.DutIdentity("dut", found.name, "", found.model)
        self._info = replace(
            _dut_info(f"{gateway.device_id}/{found.id}", self.address, identity, gateway.hostname),
            agent_version=gateway.agent_version,
            protocol_version=gateway.protocol_version,
        )

    def info(self, refresh: bool = False) -> DeviceInfo:
        return self._info

    def has_model(self, sha256: str) -> bool:
        return self.client.has_model(sha256)

    def push(self, path: Union[str, Path], name: Optional[str] = None) -> str:
        """Pushes the .tflite to the gateway (its input spec makes the DUT's inputs there)."""
        return self.client.push(_tflite_bytes(path)[0], name)

    def benchmark(
        self,
        model: Union[str, Path],
        options: Optional[BenchmarkOptions] = None,
        on_progress: Optional[OnProgress] = None,
        name: str = "",
    ) -> Measurement:
        options = options or BenchmarkOptions()
        options.validate()
        path = Path(model)
        sha = self.push(path)
        result = self.client.benchmark_target(self.target, sha, options, on_progress)
        if result.runtime_version:
            self._info = replace(self._info, os=result.runtime_version)
        return Measurement.from_proto(
            result, self._info, model_name=name or path.name, requested=options
        )

    def infer(self, *_args: Any, **_kwargs: Any) -> list:
        raise _no_infer(self.name)

    def close(self) -> None:
        pass  # the agent's client is closed by whoever opened it


def describe_ports(ports: list, probes: dict) -> list[dict]:
    """Rows for `edgeloop devices scan --serial`: port, VID:PID, board, whether a DUT answered."""
    rows = []
    for port in ports:
        found = probes.get(port.port)
        rows.append(
            {
                "port": port.port,
                "usb_vid_pid": port.usb_vid_pid,
                "board": port.board,
                "description": port.description,
                "probed": found is not None,
                "dut": bool(found and found.answered),
                "name": found.identity.vendor if found and found.identity else "",
                "model": found.identity.model if found and found.identity else "",
                "reason": found.reason if found else "",
            }
        )
    return rows
