"""Concurrent health check of a fleet: reachable, versions, runtimes, sensors, disk, temperature."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Optional

from toolkit.devices.connect import open_device
from toolkit.devices.fleet import Fleet
from toolkit.devices.parallel import DEFAULT_MAX_PARALLEL, Done, Tally, run_bounded
from toolkit.devices.profile import DeviceProfile


@dataclass(frozen=True)
class DeviceHealth:
    """One device's state. When `reachable` is False, `error` says why and the rest is empty.

    Attributes:
        device: Profile name.
        address: Where it was reached ("host:port", the tunnel's local end, or ssh://...).
        transport: "grpc", "local" or "ssh" (plus "+tunnel" through an SSH forward).
        reachable: The agent (or, for transport ssh, the device's agent code) answered.
        error: Why not, one line.
        hostname, device_id, arch: As the device reports them.
        agent_version, protocol_version: The agent's.
        runtimes: Available runtimes as "name version".
        sensors: Available power sensors.
        disk_free_mb: Free space where the agent keeps models (MB).
        temperature_c: Device temperature when a sensor is readable, else None.
        check_ms: Wall time of the check, connect included (ms).
    """

    device: str
    address: str
    transport: str
    reachable: bool
    error: str = ""
    hostname: str = ""
    device_id: str = ""
    arch: str = ""
    agent_version: str = ""
    protocol_version: Optional[int] = None
    runtimes: tuple[str, ...] = ()
    sensors: tuple[str, ...] = ()
    disk_free_mb: Optional[float] = None
    temperature_c: Optional[float] = None
    check_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _transport(profile: DeviceProfile) -> str:
    return profile.transport + ("+tunnel" if profile.tunnel == "ssh" else "")


def check_device(profile: DeviceProfile) -> DeviceHealth:
    """Connects to one device and reads GetInfo; never raises for a device-side problem."""
    started = time.perf_counter()
    address = profile.address or (f"ssh://{profile.ssh.host}" if profile.ssh else profile.transport)
    try:
        with open_device(profile) as client:
            info = client.info()
            address = getattr(client, "address", address)
    except Exception as exc:  # noqa: BLE001 - any failure is this device's state, reported
        return DeviceHealth(
            device=profile.name,
            address=address,
            transport=_transport(profile),
            reachable=False,
            error=f"{type(exc).__name__}: {exc}",
            check_ms=(time.perf_counter() - started) * 1e3,
        )
    return DeviceHealth(
        device=profile.name,
        address=address,
        transport=_transport(profile),
        reachable=True,
        hostname=info.hostname,
        device_id=info.device_id,
        arch=info.arch,
        agent_version=info.agent_version,
        protocol_version=info.protocol_version,
        runtimes=tuple(f"{r.name} {r.version}".strip() for r in info.runtimes if r.available),
        sensors=tuple(s.name for s in info.sensors if s.available),
        disk_free_mb=info.disk_free_bytes / 2**20,
        temperature_c=info.temperature_c,
        check_ms=(time.perf_counter() - started) * 1e3,
    )


def check_fleet(
    fleet: Fleet,
    max_workers: int = 0,
    timeout_s: float = 30.0,
    on_done: Optional[Callable[[DeviceHealth, Tally], None]] = None,
) -> list[DeviceHealth]:
    """Checks every device, at most `max_workers` at once; results in the fleet's order.

    Args:
        fleet: The devices.
        max_workers: Parallel checks (default 0: `DEFAULT_MAX_PARALLEL`, 32).
        timeout_s: A device that has not answered within this is DOWN, named as timed out
            (default 30 s; 0: only the client's own deadlines).
        on_done: Called with each device's record as it arrives, and the tally so far.
    """

    def report(done: Done, tally: Tally) -> None:
        if on_done is not None:
            on_done(_record(done), tally)

    outcomes = run_bounded(
        fleet.devices,
        check_device,
        max_workers or DEFAULT_MAX_PARALLEL,
        timeout_s,
        report,
        failed=lambda h: not h.reachable,
        name="health",
    )
    return [_record(d) for d in outcomes]


def _record(done: Done) -> DeviceHealth:
    if done.value is not None:
        return done.value
    profile = done.item
    return DeviceHealth(
        device=profile.name,
        address=profile.address or profile.transport,
        transport=_transport(profile),
        reachable=False,
        error=done.error,
        check_ms=done.seconds * 1e3,
    )
