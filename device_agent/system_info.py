"""Facts about this device for GetInfo: identity, CPU, memory, disk, temperature."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
from functools import lru_cache
from pathlib import Path
from typing import Optional


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def default_device_id() -> str:
    """hostname plus a short digest of /etc/machine-id (stable across reboots)."""
    host = socket.gethostname()
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine = Path(path).read_text().strip()
        except OSError:
            continue
        if machine:
            return f"{host}-{hashlib.sha256(machine.encode()).hexdigest()[:8]}"
    return host


def memory_total_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def disk_free_bytes(path: Path) -> int:
    return int(shutil.disk_usage(path).free)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def os_name() -> str:
    return f"{platform.system()} {platform.release()}"


def temperature_c() -> Optional[float]:
    from device_agent.sensors.thermal import read_thermal

    return read_thermal().temperature_c
