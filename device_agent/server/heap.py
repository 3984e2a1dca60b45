"""The agent's heap: freed message buffers are kept for reuse (glibc only).

A push arrives as 1 MiB messages, each copied by gRPC into a fresh buffer. With glibc's
defaults a buffer that size is mmap'd (the mmap threshold starts at 128 KiB) and the heap's
free top is given back past 128 KiB, so every message lands in newly faulted, zeroed pages:
on a 2-vCPU VM that kept the agent busier than its sha256. Raising both thresholds lets the
next message reuse the last one's pages. The cost: the agent may hold up to TRIM_BYTES of
freed heap. Benchmark children are separate processes (spawned, or forked from the zygote,
which does not call this) and keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import platform

MMAP_THRESHOLD_BYTES = 4 << 20  # above the 1 MiB push chunk
TRIM_BYTES = 64 << 20
_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
_M_MMAP_THRESHOLD = -3


def keep_freed_buffers() -> bool:
    """Raises glibc's mmap and trim thresholds for this process; False (nothing changed)
    where the C library is not glibc or refuses."""
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # this process's own symbols: glibc is loaded
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES)
    )
