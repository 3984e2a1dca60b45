"""Where edgeloop keeps its data: `EDGELOOP_HOME`, else a per-user location."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The repository's profiles/ as an installed wheel carries it (copied there by setup.py).
BUNDLED_PROFILES = Path(__file__).resolve().parent / "bundled_profiles"


def edgeloop_home() -> Path:
    """Returns the data directory (results store, caches, local agent), creating it.

    `EDGELOOP_HOME` overrides; else `$XDG_DATA_HOME/edgeloop`, else `~/.local/share/edgeloop`.
    """
    env = os.environ.get("EDGELOOP_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        home = Path(base) / "edgeloop"
    home.mkdir(parents=True, exist_ok=True)
    return home


def bundled_profiles_dir() -> Path:
    """The profiles that ship with edgeloop: an installed wheel's copy, else the checkout's."""
    return BUNDLED_PROFILES if BUNDLED_PROFILES.is_dir() else REPO_ROOT / "profiles"


def profile_dirs() -> list[Path]:
    """Folders searched for device profiles and fleets by name, first match wins."""
    dirs = []
    env = os.environ.get("EDGELOOP_PROFILES")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    dirs.append(Path.cwd() / "profiles")
    dirs.append(bundled_profiles_dir())
    home = os.environ.get("EDGELOOP_HOME")
    if home:
        dirs.append(Path(home) / "profiles")
    return dirs
