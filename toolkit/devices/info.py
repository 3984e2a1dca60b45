"""What a device agent reports about itself (GetInfo), as a host-side dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from device_agent.protocol import edgeloop_pb2 as pb


@dataclass(frozen=True)
class RuntimeOnDevice:
    name: str
    available: bool
    version: str = ""
    module: str = ""
    reason: str = ""
    accelerators: tuple[str, ...] = ()


@dataclass(frozen=True)
class SensorOnDevice:
    name: str
    available: bool
    reason: str = ""
    rate_hz: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class AttachedOnDevice:
    """A device reached through this agent (a DUT on a gateway's serial port); benchmark it
    with `edgeloop profile ... --target ID`."""

    id: str
    kind: str
    port: str
    baud: int
    name: str = ""
    model: str = ""
    available: bool = False
    reason: str = ""
    usb_vid_pid: str = ""

    @classmethod
    def from_proto(cls, msg: pb.AttachedDevice) -> AttachedOnDevice:
        return cls(
            msg.id,
            msg.kind,
            msg.port,
            msg.baud,
            msg.name,
            msg.model,
            msg.available,
            msg.reason,
            msg.usb_vid_pid,
        )


@dataclass(frozen=True)
class DeviceInfo:
    """Identity and capabilities of one device, as its agent reports them."""

    device_id: str
    hostname: str
    arch: str
    os: str
    cpu_model: str
    cpu_cores: int
    memory_total_bytes: int
    agent_version: str
    protocol_version: int
    python_version: str
    disk_free_bytes: int
    cache_used_bytes: int
    cache_quota_bytes: int
    max_model_bytes: int
    temperature_c: Optional[float] = None
    runtimes: tuple[RuntimeOnDevice, ...] = field(default_factory=tuple)
    sensors: tuple[SensorOnDevice, ...] = field(default_factory=tuple)
    address: str = ""
    attached: tuple[AttachedOnDevice, ...] = field(default_factory=tuple)

    @classmethod
    def from_proto(cls, msg: pb.DeviceInfo, address: str = "") -> DeviceInfo:
        return cls(
            device_id=msg.device_id,
            hostname=msg.hostname,
            arch=msg.arch,
            os=msg.os,
            cpu_model=msg.cpu_model,
            cpu_cores=msg.cpu_cores,
            memory_total_bytes=msg.memory_total_bytes,
            agent_version=msg.agent_version,
            protocol_version=msg.protocol_version,
            python_version=msg.python_version,
            disk_free_bytes=msg.disk_free_bytes,
            cache_used_bytes=msg.cache_used_bytes,
            cache_quota_bytes=msg.cache_quota_bytes,
            max_model_bytes=msg.max_model_bytes,
            temperature_c=msg.temperature_c if msg.HasField("temperature_c") else None,
            runtimes=tuple(
                RuntimeOnDevice(
                    r.name, r.available, r.version, r.module, r.reason, tuple(r.accelerators)
                )
                for r in msg.runtimes
            ),
            sensors=tuple(
                SensorOnDevice(s.name, s.available, s.reason, s.rate_hz, s.detail)
                for s in msg.sensors
            ),
            address=address,
            attached=tuple(AttachedOnDevice.from_proto(a) for a in msg.attached),
        )

    def runtime(self, name: str) -> Optional[RuntimeOnDevice]:
        return next((r for r in self.runtimes if r.name == name), None)

    @property
    def available_runtimes(self) -> list[str]:
        return [r.name for r in self.runtimes if r.available]

    @property
    def available_sensors(self) -> list[str]:
        return [s.name for s in self.sensors if s.available]
