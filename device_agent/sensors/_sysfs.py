"""Reading sysfs files under a root that tests can point at a directory tree.

Every sensor and the thermal reader resolve their paths here: the root is "/" unless the
environment variable `EDGELOOP_SYSFS_ROOT` names another directory. The variable is read
at each call, so a process (or a test) can change it at run time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

SYSFS_ROOT_ENV = "EDGELOOP_SYSFS_ROOT"


def sysfs_root() -> Path:
    """Returns the directory sysfs paths are resolved under (default "/")."""
    return Path(os.environ.get(SYSFS_ROOT_ENV) or "/")


def sys_path(relative: str) -> Path:
    """Returns `relative` (e.g. "sys/class/powercap") resolved under the sysfs root."""
    return sysfs_root() / relative.lstrip("/")


def sys_glob(pattern: str) -> list[Path]:
    """Returns the paths matching `pattern` (relative, glob syntax) under the root, sorted."""
    return sorted(sysfs_root().glob(pattern.lstrip("/")))


def read_str(path: Path) -> str:
    """Returns the stripped text of a sysfs file.

    Raises:
        OSError: the file is missing or cannot be read (permission, driver error).
    """
    return path.read_text(encoding="ascii", errors="replace").strip()


def read_int(path: Path) -> int:
    """Returns the integer a sysfs file holds.

    Raises:
        OSError: the file cannot be read.
        ValueError: the file does not hold an integer; the message names the file.
    """
    text = read_str(path)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}: expected an integer, read {text[:40]!r}") from None


def try_read_str(path: Path) -> Optional[str]:
    """Returns the stripped text of a sysfs file, or None when it cannot be read."""
    try:
        return read_str(path)
    except OSError:
        return None


def try_read_int(path: Path) -> Optional[int]:
    """Returns the integer a sysfs file holds, or None when it is unreadable or not an integer."""
    try:
        return read_int(path)
    except (OSError, ValueError):
        return None
