"""The edgeloop wheel as a user installs it, and virtual environments made from it.

`project_wheel()` builds the checkout's wheel once per test session, the way `edgeloop devices
bootstrap` does (`build_project_wheel`); `Venv` is a virtual environment with that wheel
installed (not editable), its dependencies from the lock `deploy/constraints.txt` where the
interpreter has wheels for the pinned versions.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from toolkit.paths import REPO_ROOT
from toolkit.transport.ssh.wheelhouse import build_project_wheel

LOCK = REPO_ROOT / "deploy" / "constraints.txt"


def lock_for(python: Path | str) -> Path:
    """The lock `bash deploy/lock.sh` wrote for this interpreter's Python: the agent's own
    (`constraints-agent-pyXY.txt`, e.g. 3.10, where the host lock's numpy has no wheel) where
    there is one, else the host lock."""
    major, minor, _ = python_version(python)
    agent_lock = REPO_ROOT / "deploy" / f"constraints-agent-py{major}{minor}.txt"
    return agent_lock if agent_lock.is_file() else LOCK
PIP_TIMEOUT_S = 900


def project_wheel(tmp_path_factory) -> Path:
    """The checkout's edgeloop wheel, built once per session under the session's tmp."""
    out = tmp_path_factory.getbasetemp() / "edgeloop-wheel"
    built = sorted(out.glob("edgeloop-*.whl")) if out.is_dir() else []
    if built:
        return built[-1]
    staging = tmp_path_factory.mktemp("edgeloop-wheel-build")
    wheel = build_project_wheel(staging)
    try:
        staging.rename(out)  # another worker may have got there first: then use its wheel
    except OSError:
        return sorted(out.glob("edgeloop-*.whl"))[-1]
    return out / wheel.name


@dataclass(frozen=True)
class Venv:
    """A virtual environment: its folder, its python, and how its dependencies were pinned."""

    root: Path
    locked: bool  # dependencies installed with `-c deploy/constraints.txt`

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def run(self, *args: str, cwd: Path, env: Optional[dict] = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        """Runs a command of this venv (`edgeloop`, `python`) from `cwd`, with the venv first
        on PATH; fails the test with its output on a non-zero exit."""
        exe = args[0] if os.sep in args[0] else str(self.bin / args[0])
        full_env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                    **(env or {})}
        full_env.pop("PYTHONPATH", None)
        proc = subprocess.run([exe, *args[1:]], cwd=cwd, env=full_env, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, (
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
        return proc


def python_version(python: Path | str) -> tuple[int, int, int]:
    """(major, minor, micro) of an interpreter, asked of the interpreter itself."""
    out = subprocess.run([str(python), "-c", "import sys; print(*sys.version_info[:3])"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    major, minor, micro = (int(x) for x in out.split())
    return major, minor, micro


def _pip(python: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
    )


def make_venv(python: Path | str, root: Path, requirements: list[str],
              system_site_packages: bool = False) -> Venv:
    """A venv of `python` at `root` with `requirements` (the wheel among them) installed.

    With the lock first; where that cannot resolve (the lock pins a version this interpreter
    has no wheel for, e.g. numpy 2.4 on Python 3.10) without it. With `system_site_packages`,
    the dependencies come from the interpreter's own site-packages and only the requirements
    are installed, without their dependencies, beside anything installed there already.

    Raises:
        RuntimeError: pip could not install the requirements at all (its last lines).
    """
    shutil.rmtree(root, ignore_errors=True)
    args = [str(python), "-m", "venv", str(root)]
    subprocess.run(args + (["--system-site-packages"] if system_site_packages else []),
                   check=True, capture_output=True, timeout=300)
    venv = Venv(root, locked=False)
    if system_site_packages:
        proc = _pip(venv.python, ["--no-deps", "--ignore-installed", *requirements])
    else:
        lock = lock_for(python)
        proc = _pip(venv.python, ["-c", str(lock), *requirements]) if lock.is_file() else None
        if proc is not None and proc.returncode == 0:
            return Venv(root, locked=True)
        proc = _pip(venv.python, requirements)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"pip install {' '.join(requirements)} under {python}: {tail}")
    return venv


def interpreters() -> dict[tuple[int, int], Path]:
    """CPython 3.x interpreters on this machine by (major, minor): pyenv's builds
    (`$(pyenv root)/versions/X.Y.Z/bin/python3`) and `python3.X` on PATH, the first of each
    minor version found."""
    found: dict[tuple[int, int], Path] = {}
    root = os.environ.get("PYENV_ROOT") or _pyenv_root() or str(Path.home() / ".pyenv")
    for exe in sorted(Path(root).glob("versions/*/bin/python3")):
        m = re.fullmatch(r"(\d+)\.(\d+)\.\d+", exe.parent.parent.name)  # not 3.13.0t, pypy…
        if m:
            found.setdefault((int(m[1]), int(m[2])), exe)
    for minor in range(8, 20):
        exe = shutil.which(f"python3.{minor}")
        if exe and "/shims/" not in exe:  # pyenv's shims only run the version pyenv selects
            found.setdefault((3, minor), Path(exe))
    return dict(sorted(found.items()))


def _pyenv_root() -> Optional[str]:
    if not shutil.which("pyenv"):
        return None
    proc = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None
