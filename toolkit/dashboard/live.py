"""The Devices page's live column: every device in the fleet files, asked GetInfo and Health
now, with a short timeout, never starting anything (a `local` device is the host's own agent,
started on demand by a command; an `ssh` device has no agent to ask)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from toolkit.devices.profile import DeviceProfile

CHECK_TIMEOUT_S = 2.0
_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dashboard-health")


@dataclass(frozen=True)
class FleetDevice:
    """A device named in a fleet file."""

    fleet: str
    name: str
    address: str
    transport: str
    tags: tuple[str, ...]
    checkable: bool  # a gRPC agent the dashboard may ask
    profile: DeviceProfile = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "profile"}


@dataclass(frozen=True)
class LiveState:
    """What a device answered just now (or why it did not)."""

    name: str
    reachable: bool
    status: str  # "up", "down", or why it was not asked
    device_id: str = ""
    hostname: str = ""
    runtimes: tuple[str, ...] = ()
    sensors: tuple[str, ...] = ()
    agent_version: str = ""
    queued_benchmarks: Optional[int] = None
    check_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fleet_devices(folders: Optional[list[Path]] = None) -> tuple[list[FleetDevice], list[str]]:
    """Every device of every fleet file (`<profiles>/fleets/*.yaml`), and one line per fleet
    file that could not be read."""
    from toolkit.devices.fleet import load_fleet
    from toolkit.errors import EdgeloopError
    from toolkit.paths import profile_dirs

    devices, problems, seen = [], [], set()
    for folder in folders if folders is not None else profile_dirs():
        for path in sorted((folder / "fleets").glob("*.y*ml")):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                fleet = load_fleet(str(path))
            except (EdgeloopError, OSError) as exc:
                problems.append(f"{path}: {exc}")
                continue
            devices += [_fleet_device(fleet.name, p) for p in fleet.devices]
    return devices, problems


def _fleet_device(fleet: str, p: DeviceProfile) -> FleetDevice:
    address = p.address or (f"ssh://{p.ssh.host}" if p.ssh else p.transport)
    checkable = p.transport == "grpc" and p.tunnel is None and bool(p.address)
    return FleetDevice(
        fleet,
        p.name,
        address,
        p.transport + ("+tunnel" if p.tunnel else ""),
        tuple(p.tags),
        checkable,
        p,
    )


def _ask(device: FleetDevice) -> LiveState:
    from toolkit.transport.grpc_client import DeviceClient

    started = time.perf_counter()
    profile = device.profile
    try:
        with DeviceClient(
            profile.address, tls=profile.tls, name=profile.name, connect_timeout_s=CHECK_TIMEOUT_S
        ) as client:
            info = client.info()
            health = client.health()
    except Exception as exc:  # noqa: BLE001 - any failure is this device's state, shown
        return LiveState(
            device.name,
            False,
            f"down: {type(exc).__name__}: {exc}"[:300],
            check_ms=(time.perf_counter() - started) * 1e3,
        )
    return LiveState(
        device.name,
        True,
        "up",
        device_id=info.device_id,
        hostname=info.hostname,
        runtimes=tuple(f"{r.name} {r.version}".strip() for r in info.runtimes if r.available),
        sensors=tuple(s.name for s in info.sensors if s.available),
        agent_version=info.agent_version,
        queued_benchmarks=int(health.queued_benchmarks),
        check_ms=(time.perf_counter() - started) * 1e3,
    )


def check_all(timeout_s: float = CHECK_TIMEOUT_S + 1.0) -> list[LiveState]:
    """Asks every checkable fleet device at once; a device that has not answered within
    `timeout_s` is reported as such (its check goes on in the background and is dropped)."""
    devices, _ = fleet_devices()
    states: list[LiveState] = []
    futures = {}
    for device in devices:
        if not device.checkable:
            why = (
                "not asked: the local agent starts with a command"
                if device.transport == "local"
                else f"not asked: {device.transport} transport"
            )
            states.append(LiveState(device.name, False, why))
        elif device.name not in futures:
            futures[device.name] = _POOL.submit(_ask, device)
    done, _ = wait(futures.values(), timeout=timeout_s)
    for name, future in futures.items():
        if future in done:
            states.append(future.result())
        else:
            states.append(LiveState(name, False, f"down: no answer within {timeout_s:g} s"))
    return states
