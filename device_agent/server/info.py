"""The GetInfo record: identity, capabilities and state of this device and its agent."""

from __future__ import annotations

import platform

from device_agent import __version__, system_info
from device_agent.cache.model_cache import ModelCache
from device_agent.protocol import PROTOCOL_VERSION
from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.runtimes.registry import runtime_statuses
from device_agent.sensors.registry import sensor_infos


def build_device_info(cache: ModelCache, device_id: str = "") -> pb.DeviceInfo:
    """Builds DeviceInfo for the agent serving `cache` (also `python -m device_agent info`)."""
    info = pb.DeviceInfo(
        device_id=device_id or system_info.default_device_id(),
        hostname=platform.node(),
        arch=platform.machine(),
        os=system_info.os_name(),
        cpu_model=system_info.cpu_model(),
        cpu_cores=system_info.cpu_cores(),
        memory_total_bytes=system_info.memory_total_bytes(),
        agent_version=__version__,
        protocol_version=PROTOCOL_VERSION,
        python_version=platform.python_version(),
        disk_free_bytes=system_info.disk_free_bytes(cache.root),
        cache_used_bytes=cache.used_bytes(),
        cache_quota_bytes=cache.quota_bytes,
        max_model_bytes=cache.max_model_bytes,
    )
    for s in runtime_statuses():
        info.runtimes.add(
            name=s.name,
            available=s.available,
            version=s.version,
            module=s.module,
            reason=s.reason,
            accelerators=list(s.accelerators),
        )
    for s in sensor_infos():
        info.sensors.add(
            name=s.name, available=s.available, reason=s.reason, rate_hz=s.rate_hz, detail=s.detail
        )
    from device_agent.serial_dut.attached import registry

    info.attached.extend(registry().describe())
    temperature = system_info.temperature_c()
    if temperature is not None:
        info.temperature_c = temperature
    return info
