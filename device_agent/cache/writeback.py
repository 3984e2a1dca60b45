"""Early writeback of a file being written: Linux's sync_file_range(SYNC_FILE_RANGE_WRITE).

A push fsyncs its file before the model enters the cache. Left alone, the kernel starts
writing a 64 MiB file back only at that fsync, which then waits for all of it (about 18 ms
here, after the last byte arrived). Starting writeback of each few MiB as they are written
(what databases call bytes_per_sync) lets the disk work while the rest is received, so the
final fsync has little left to do. The call only starts I/O; durability is still the fsync's.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Optional

EVERY_BYTES = 8 << 20
"""Writeback is started each time this many bytes were written since the last start."""

_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>


def _load() -> Optional[Callable[[int, int, int, int], int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:  # this process's own symbols (no `ldconfig` run, as ctypes.util.find_library does)
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except AttributeError:  # a C library without it
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return call


_sync_file_range = _load()
AVAILABLE = _sync_file_range is not None


def start_writeback(fd: int, offset: int, nbytes: int) -> bool:
    """Asks the kernel to start writing bytes [offset, offset + nbytes) of `fd` to disk and
    returns at once; False where the call is unavailable or refused (nothing is lost: the
    fsync that follows writes everything)."""
    if _sync_file_range is None:
        return False
    return _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) == 0
