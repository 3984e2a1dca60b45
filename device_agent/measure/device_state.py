"""The device's state during a benchmark (`DeviceState`), and pinning the benchmark to CPUs.

OS, kernel, CPU model and Python version are facts of the device; the CPUs the benchmark
child may run on (its affinity), their cpufreq governor and their frequency when the timed
window began are read in the child. Paths are resolved under the sysfs root (`_sysfs.py`);
a governor or frequency that cannot be read stays empty, never guessed.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from typing import Optional

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.sensors._sysfs import sys_path, try_read_int, try_read_str
from device_agent.system_info import cpu_model

CPUFREQ = "sys/devices/system/cpu/cpu{}/cpufreq"
_unpinned: Optional[list[int]] = None  # this process's CPUs before `pin`


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """'0,2-3' -> (0, 2, 3) (taskset -c syntax); '' -> ().

    Raises:
        ValueError: not CPU numbers and ranges; the message quotes the text.
    """
    cpus: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            cpus.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ValueError(f"expected CPU numbers like '2,3' or '0-3', got {text!r}") from None
    return tuple(sorted(set(cpus)))


def format_cpu_list(cpus: Iterable[int]) -> str:
    """(0, 1, 2, 5) -> '0-2,5'."""
    ordered, out, i = sorted(cpus), [], 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def affinity() -> list[int]:
    """The CPUs this process may run on, sorted (all of them where the OS cannot say)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def pin(cpus: Iterable[int]) -> None:
    """Pins every thread of this process to `cpus` (none: leaves it as it is). Threads that
    imports already started (a BLAS pool) are pinned too; later ones inherit the mask. Done
    by the benchmark child itself: pinning another user's process (``--run-as``) would need
    CAP_SYS_NICE, which root in many containers lacks.

    Raises:
        ValueError: the kernel refused the set (CPUs offline or outside this cpuset).
    """
    global _unpinned
    wanted = sorted(set(cpus))
    if not wanted:
        return
    _unpinned = affinity()
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    try:
        for tid in threads:
            try:
                os.sched_setaffinity(tid, wanted)
            except ProcessLookupError:
                pass  # a thread that has ended since the listing
    except OSError as exc:
        raise ValueError(
            f"options.cpu_affinity {wanted}: cannot pin to these CPUs: {exc}"
        ) from None


def other_cpus() -> Optional[list[int]]:
    """After `pin`: the CPUs this process had and is not pinned to (all it had when the pin
    covers them all), for the measuring threads; None when it was not pinned."""
    if _unpinned is None:
        return None
    pinned = set(affinity())
    return [cpu for cpu in _unpinned if cpu not in pinned] or list(_unpinned)


def governor(cpus: Iterable[int]) -> str:
    """The cpufreq scaling governor of `cpus`: one name, or the distinct names joined by ","
    (e.g. "performance,powersave") when they differ; "" when none is readable."""
    names = {try_read_str(sys_path(CPUFREQ.format(cpu)) / "scaling_governor") for cpu in cpus}
    return ",".join(sorted(n for n in names if n))


def cpu_freq_mhz(cpus: Iterable[int]) -> Optional[float]:
    """Mean current frequency of `cpus` (scaling_cur_freq) in MHz, or None when unreadable."""
    khz = [try_read_int(sys_path(CPUFREQ.format(cpu)) / "scaling_cur_freq") for cpu in cpus]
    readable = [k for k in khz if k is not None and k > 0]
    return sum(readable) / len(readable) / 1000.0 if readable else None


def device_state(cpus: Optional[list[int]] = None) -> pb.DeviceState:
    """OS, kernel, CPU model, Python version, and the governor of `cpus` (default: this
    process's affinity), which are recorded as `affinity`. The frequency is left to the caller
    (it belongs to the moment the timed window begins)."""
    cpus = affinity() if cpus is None else sorted(cpus)
    return pb.DeviceState(
        os=platform.system(),
        kernel=platform.release(),
        cpu_model=cpu_model(),
        python_version=platform.python_version(),
        governor=governor(cpus),
        affinity=cpus,
    )
