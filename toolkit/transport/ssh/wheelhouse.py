"""Host side of a bootstrap: the project wheel and a wheelhouse for the device's platform.

The wheelhouse holds binary wheels of the agent's light dependencies for the device's Python
and platform tags (as the device reports them), so a device without internet installs with
`pip install --no-index --find-links`. Wheelhouses are cached per (tags, requirements).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Optional

from toolkit.errors import ConfigError, EdgeloopError
from toolkit.paths import REPO_ROOT, edgeloop_home

# Runs on the device with its own python (3.9+, standard library only).
PROBE_SCRIPT = (
    "import json, platform, sys, sysconfig; "
    "print(json.dumps({'impl': sys.implementation.name, "
    "'version': '%d.%d' % sys.version_info[:2], 'abiflags': getattr(sys, 'abiflags', ''), "
    "'platform': sysconfig.get_platform(), 'libc': platform.libc_ver(), "
    "'android': hasattr(sys, 'getandroidapilevel')}))"
)
# What a wheel is built from: setup.py copies profiles/ into it (MANIFEST.in, the sdist).
_SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "toolkit",
            "device_agent", "profiles")


@dataclass(frozen=True)
class PythonTarget:
    """The device's interpreter, as pip's --python-version/--implementation/--abi/--platform."""

    python_version: str          # "3.11"
    implementation: str          # "cp"
    abis: tuple[str, ...]        # ("cp311", "abi3", "none")
    platforms: tuple[str, ...]   # ("manylinux_2_36_x86_64", ..., "linux_x86_64")

    @classmethod
    def from_probe(cls, raw: dict, where: str) -> PythonTarget:
        """Builds the target from PROBE_SCRIPT's JSON; ConfigError when pip cannot serve it."""
        impl = {"cpython": "cp", "pypy": "pp"}.get(raw.get("impl", ""), "")
        plat = str(raw.get("platform", ""))
        if not impl or not plat.startswith("linux-") or raw.get("android"):
            raise ConfigError(
                f"{where}: no binary wheelhouse for {raw.get('impl')} on {plat or '?'}"
                f"{' (Android)' if raw.get('android') else ''}; bootstrap with --online so the "
                "device installs from its own package index (see deploy/README.md)"
            )
        arch = plat[len("linux-"):].replace("-", "_").replace(".", "_")
        version = str(raw["version"])
        nodot = version.replace(".", "")
        libc, libc_version = (list(raw.get("libc") or ["", ""]) + ["", ""])[:2]
        return cls(version, impl, (f"{impl}{nodot}{raw.get('abiflags', '')}", "abi3", "none"),
                   tuple(_platform_tags(arch, libc, libc_version)))

    def key(self, requirements: tuple[str, ...]) -> str:
        """Cache key of a wheelhouse for these tags and requirements."""
        text = json.dumps([self.python_version, self.implementation, self.abis, self.platforms,
                           sorted(requirements)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _platform_tags(arch: str, libc: str, libc_version: str) -> list[str]:
    tags: list[str] = []
    parts = libc_version.split(".")
    if libc == "glibc" and len(parts) >= 2 and parts[1].isdigit():
        tags += [f"manylinux_2_{minor}_{arch}" for minor in range(int(parts[1]), 16, -1)]
        tags.append(f"manylinux2014_{arch}")
        if arch in ("x86_64", "i686"):
            tags += [f"manylinux_2_{minor}_{arch}" for minor in (12, 5)]
            tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    tags.append(f"linux_{arch}")
    return tags


def read_requirements(path: Path) -> tuple[str, ...]:
    """Requirement lines of a requirements file (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return tuple(line for line in lines if line)


def build_project_wheel(out_dir: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Builds the edgeloop wheel from a copy of the source tree (the checkout stays clean).

    Args:
        out_dir: Folder that receives the .whl.
        repo_root: The project checkout (default toolkit.paths.REPO_ROOT).
    """
    if not (repo_root / "pyproject.toml").is_file():
        raise ConfigError(f"{repo_root}: no pyproject.toml; bootstrap needs an edgeloop checkout")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeloop-src-") as tmp:
        src = Path(tmp) / "edgeloop"
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
        for name in _SOURCES:
            item = repo_root / name
            if item.is_dir():
                shutil.copytree(item, src / name, ignore=ignore)
            elif item.is_file():
                shutil.copy2(item, src / name)
        _pip(["wheel", "--no-deps", "--no-build-isolation", "-w", str(out_dir), str(src)],
             "building the edgeloop wheel")
    wheels = sorted(out_dir.glob("edgeloop-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise EdgeloopError(f"{out_dir}: pip wheel produced no edgeloop-*.whl")
    return wheels[-1]


def wheel_requirements(wheel: Path) -> tuple[str, ...]:
    """The wheel's own Requires-Dist entries without extras (its core dependencies)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(zf.read(meta).decode("utf-8"))
    return tuple(r for r in headers.get_all("Requires-Dist") or [] if "extra ==" not in r)


def build_wheelhouse(target: PythonTarget, requirements: tuple[str, ...],
                     cache_dir: Optional[Path] = None) -> Path:
    """Downloads binary wheels for the device (cached); returns the wheelhouse folder.

    Args:
        target: The device's interpreter and platform tags.
        requirements: Requirement specifiers resolved together (e.g. "numpy<2").
        cache_dir: Parent folder of cached wheelhouses (default EDGELOOP_HOME/wheelhouses).
    """
    root = Path(cache_dir) if cache_dir else edgeloop_home() / "wheelhouses"
    final = root / target.key(requirements)
    if (final / "COMPLETE").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="partial-", dir=root))
    args = ["download", "--only-binary=:all:", "--dest", str(tmp),
            "--python-version", target.python_version, "--implementation", target.implementation]
    for abi in target.abis:
        args += ["--abi", abi]
    for plat in target.platforms:
        args += ["--platform", plat]
    try:
        _pip(args + list(requirements), f"downloading wheels for {target.platforms[0]}")
        (tmp / "COMPLETE").write_text("\n".join(requirements) + "\n")
        if (final / "COMPLETE").is_file():  # another bootstrap finished it meanwhile
            return final
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _pip(args: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise EdgeloopError(f"{what} failed (pip exit {proc.returncode}): {' | '.join(tail)}")
