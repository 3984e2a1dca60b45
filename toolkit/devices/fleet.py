"""Fleets: a named list of device profiles (YAML `name:` + `devices:`), inline or by name.

name: lab
description: bench devices in room 2
devices:
  - jetson-orin-nano            # a profile by name (profiles/) or a path beside this file
  - name: pi-42                 # an inline profile
    address: 10.0.0.42:50051
    budgets: {latency_p90_ms: 20}
    tags: [raspberry-pi, arm64]  # `--select-tag arm64` picks the devices with that tag
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from toolkit.devices.profile import DeviceProfile, load_profile, load_yaml
from toolkit.errors import ConfigError, SetupError
from toolkit.paths import profile_dirs

FLEET_KEYS = ("name", "description", "devices")


@dataclass(frozen=True)
class Fleet:
    """A named set of devices with unique names."""

    name: str
    devices: tuple[DeviceProfile, ...]
    description: str = ""
    source: Optional[str] = None

    def __post_init__(self) -> None:
        where = self.source or f"fleet {self.name!r}"
        if not self.devices:
            raise ConfigError(f"{where}: devices: expected at least one device")
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise ConfigError(f"{where}: devices: device name {device.name!r} appears twice")
            seen.add(device.name)

    @classmethod
    def from_mapping(cls, raw: Any, source: Optional[str] = None) -> Fleet:
        """Builds a fleet from parsed YAML; profiles by name resolve next to `source` first."""
        where = source or "fleet"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping with 'name' and 'devices'")
        unknown = sorted(set(raw) - set(FLEET_KEYS))
        if unknown:
            raise ConfigError(f"{where}: {unknown[0]}: unknown field; expected one of {FLEET_KEYS}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: name: expected a non-empty string")
        entries = raw.get("devices")
        if not isinstance(entries, list):
            raise ConfigError(f"{where}: devices: expected a list of profiles or profile names")
        base = Path(source).parent if source else None
        devices = tuple(_device(entry, i, where, base) for i, entry in enumerate(entries))
        return cls(
            name=name, devices=devices, description=str(raw.get("description") or ""), source=source
        )

    @classmethod
    def of(cls, specs: Sequence[Union[str, DeviceProfile]], name: str = "devices") -> Fleet:
        """An ad-hoc fleet of "local", "host:port", profile names/paths or profiles."""
        from toolkit.devices.connect import resolve_profile

        return cls(name=name, devices=tuple(resolve_profile(s) for s in specs))

    def select(self, tags: Sequence[str]) -> Fleet:
        """The devices whose profile has every one of `tags` (a profile's `tags:` list).

        Raises:
            SetupError: no device has them all (the message lists the tags there are); the
                command line ends with exit code 2.
        """
        wanted = [t for t in tags if t]
        if not wanted:
            return self
        chosen = tuple(d for d in self.devices if all(t in d.tags for t in wanted))
        if not chosen:
            there = sorted({t for d in self.devices for t in d.tags})
            where = self.source or f"fleet {self.name!r}"
            raise SetupError(
                f"{where}: no device has tag(s) {', '.join(wanted)}; the tags "
                f"there are: {', '.join(there) or 'none'}"
            )
        label = f"{self.name}[{','.join(wanted)}]"
        return Fleet(label, chosen, self.description, self.source)


def _device(entry: Any, index: int, where: str, base: Optional[Path]) -> DeviceProfile:
    if isinstance(entry, dict):
        return DeviceProfile.from_mapping(entry, source=f"{where}: devices[{index}]")
    if isinstance(entry, str) and entry:
        for path in _nearby(entry, base):
            if path.is_file():
                return load_profile(str(path))
        try:
            return load_profile(entry)
        except ConfigError as exc:
            raise ConfigError(f"{where}: devices[{index}]: {exc}") from None
    raise ConfigError(
        f"{where}: devices[{index}]: expected a profile name or a mapping, got {entry!r}"
    )


def _nearby(entry: str, base: Optional[Path]) -> list[Path]:
    """Where a profile named in a fleet file is looked for first: beside it, then one folder up
    (profiles/fleets/lab.yaml names profiles/NAME.yaml)."""
    if base is None:
        return []
    names = [entry] if entry.endswith((".yaml", ".yml")) else [f"{entry}.yaml", f"{entry}.yml"]
    return [folder / name for folder in (base, base.parent) for name in names]


def find_fleet_file(name: str) -> Optional[Path]:
    """Finds `fleets/NAME.yaml` (or `NAME.yaml`) in the profile folders; None when absent."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    for folder in profile_dirs():
        for sub in (folder / "fleets", folder):
            for suffix in (".yaml", ".yml"):
                path = sub / f"{name}{suffix}"
                if path.is_file():
                    return path
    return None


def load_fleet(path_or_name: str) -> Fleet:
    """Loads a fleet from a YAML path or by name (profiles/fleets/NAME.yaml)."""
    path = Path(path_or_name)
    if not path.is_file():
        found = find_fleet_file(path_or_name)
        if found is None:
            searched = ", ".join(str(d / "fleets") for d in profile_dirs())
            raise ConfigError(f"fleet {path_or_name!r} not found (searched {searched})")
        path = found
    return Fleet.from_mapping(load_yaml(path), source=str(path))
