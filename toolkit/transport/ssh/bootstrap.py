"""`edgeloop devices bootstrap`: install (or upgrade in place) and start the agent over SSH.

Builds the edgeloop wheel and a wheelhouse for the device's Python and platform, uploads them
by SFTP with deploy/install.sh and the systemd unit, runs the script (venv, offline install,
systemd unit or background process with a pid file), then checks GetInfo through a tunnel.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from toolkit.devices.info import DeviceInfo
from toolkit.devices.profile import DeviceProfile, SshConfig
from toolkit.errors import AgentError, ConfigError, EdgeloopError
from toolkit.paths import REPO_ROOT
from toolkit.transport.ssh.connection import SshConnection, connect
from toolkit.transport.ssh.tunnel import PortForward
from toolkit.transport.ssh.wheelhouse import (
    PROBE_SCRIPT,
    PythonTarget,
    build_project_wheel,
    build_wheelhouse,
    read_requirements,
    wheel_requirements,
)

DEPLOY_DIR = REPO_ROOT / "deploy"
MODES = ("auto", "system", "user", "process")


@dataclass(frozen=True)
class BootstrapOptions:
    """How to bootstrap.

    Attributes:
        requirements: Extra requirement specifiers for the device (a runtime, e.g.
            "tflite-runtime==2.14.0", "numpy<2"); empty: deploy/requirements-agent.txt.
        online: Let the device install from its own package index instead of an uploaded
            wheelhouse (Android/Termux, platforms without binary wheels). Default False.
        mode: "auto" (systemd system unit, else user unit, else a process), or one of them.
        wheelhouse_cache: Host folder caching wheelhouses (default EDGELOOP_HOME/wheelhouses).
        accept_new_host_key: Record an unknown host key instead of failing.
        ready_timeout_s: How long to wait for the started agent to answer GetInfo (default 60).
    """

    requirements: tuple[str, ...] = ()
    online: bool = False
    mode: str = "auto"
    wheelhouse_cache: Optional[Path] = None
    accept_new_host_key: bool = False
    ready_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"bootstrap mode: expected one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class BootstrapResult:
    """What a bootstrap did on one device."""

    device: str
    endpoint: str             # user@host:port
    agent_dir: str            # absolute, on the device
    mode: str                 # "system", "user" or "process"
    pid: Optional[int]        # the agent's pid in process mode
    agent_port: int           # on the device's loopback
    python_version: str       # the device's Python, "3.11"
    uploaded_files: int
    uploaded_bytes: int
    info: DeviceInfo          # GetInfo through the tunnel, after the start
    seconds: float


def bootstrap_device(profile: DeviceProfile, options: Optional[BootstrapOptions] = None,
                     log: Callable[[str], None] = lambda _msg: None) -> BootstrapResult:
    """Installs or upgrades the agent on a device over SSH, starts it and checks GetInfo.

    Args:
        profile: The device; its `ssh` section says how to log in and where to install.
        options: See BootstrapOptions (default: its defaults).
        log: Receives one line per step (for the CLI).

    Raises:
        ConfigError: The profile has no `ssh` section, or the platform needs --online.
        HostKeyError / AgentUnreachableError: SSH failed.
        AgentError: The install script or the started agent failed (with the log's tail).
    """
    if profile.ssh is None:
        raise ConfigError(f"{profile.source or profile.name}: ssh: bootstrap needs an ssh section")
    options = options or BootstrapOptions()
    cfg, started = profile.ssh, time.monotonic()
    with connect(cfg, accept_new_host_key=options.accept_new_host_key) as conn:
        agent_dir = conn.remote_path(cfg.agent_dir)
        conn.run(f"mkdir -p {_q(agent_dir)}/wheelhouse {_q(agent_dir)}/deploy")
        probe = json.loads(conn.run(f"{_q(cfg.python)} -c {_q(PROBE_SCRIPT)}").stdout)
        log(f"{conn.endpoint}: Python {probe['version']} on {probe['platform']}")
        with tempfile.TemporaryDirectory(prefix="edgeloop-wheel-") as tmp:
            wheel = build_project_wheel(Path(tmp))
            log(f"built {wheel.name}")
            runtime_reqs = options.requirements or read_requirements(
                DEPLOY_DIR / "requirements-agent.txt")
            files = [wheel]
            if not options.online:
                target = PythonTarget.from_probe(probe, str(conn.endpoint))
                house = build_wheelhouse(target, wheel_requirements(wheel) + runtime_reqs,
                                         options.wheelhouse_cache)
                files += sorted(p for p in house.iterdir() if p.suffix == ".whl")
                log(f"wheelhouse {house} ({len(files) - 1} wheels)")
            count, size = _upload(conn, files, f"{agent_dir}/wheelhouse", always={wheel.name})
            for name in ("install.sh", "edgeloop-agent.service"):
                size += _put(conn, DEPLOY_DIR / name, f"{agent_dir}/deploy/{name}")
            with conn.sftp.open(f"{agent_dir}/deploy/requirements.txt", "w") as fh:
                fh.write("\n".join(runtime_reqs) + "\n")
            log(f"uploaded {count} files ({size / 2**20:.1f} MiB)")
        mode, pid = _install(conn, cfg, agent_dir, wheel.name, options)
        log(f"agent started ({mode}{f', pid {pid}' if pid else ''}) on 127.0.0.1:{cfg.agent_port}")
        info = _check(conn, profile, agent_dir, options.ready_timeout_s)
        return BootstrapResult(
            device=profile.name, endpoint=str(conn.endpoint), agent_dir=agent_dir, mode=mode,
            pid=pid, agent_port=cfg.agent_port, python_version=str(probe["version"]),
            uploaded_files=count, uploaded_bytes=size, info=info,
            seconds=time.monotonic() - started,
        )


def _install(conn: SshConnection, cfg: SshConfig, agent_dir: str, wheel: str,
             options: BootstrapOptions) -> tuple[str, Optional[int]]:
    house = f"{agent_dir}/wheelhouse"
    cmd = [
        "sh", f"{agent_dir}/deploy/install.sh", "--agent-dir", agent_dir, "--python", cfg.python,
        "--port", str(cfg.agent_port), "--wheel", f"{house}/{wheel}",
        "--requirements", f"{agent_dir}/deploy/requirements.txt", "--mode", options.mode,
    ]
    if not options.online:
        cmd += ["--wheelhouse", house]
    result = conn.run(" ".join(_q(c) for c in cmd), timeout_s=900)
    last = next((ln for ln in reversed(result.stdout.splitlines())
                 if ln.startswith("edgeloop-agent:")), "")
    fields = dict(part.split("=", 1) for part in last.split()[1:] if "=" in part)
    if "mode" not in fields:
        raise AgentError(f"{conn.endpoint}: install.sh did not report how it started the agent")
    pid = int(fields.get("pid", "0")) or None
    return fields["mode"], pid


def _check(conn: SshConnection, profile: DeviceProfile, agent_dir: str,
           timeout_s: float) -> DeviceInfo:
    from toolkit.transport.grpc_client import DeviceClient

    assert profile.ssh is not None
    with PortForward(conn, profile.ssh.agent_port) as forward:
        try:
            with DeviceClient(forward.address, connect_timeout_s=timeout_s,
                              name=profile.name) as client:
                return client.info()
        except EdgeloopError as exc:
            log_tail = conn.run(f"tail -n 5 {_q(agent_dir)}/agent.log 2>/dev/null || true",
                                check=False).stdout.strip().replace("\n", " | ")
            raise AgentError(f"{exc}; agent.log: {log_tail or '(empty)'}") from None


def _upload(conn: SshConnection, files: list[Path], remote_dir: str,
            always: set[str]) -> tuple[int, int]:
    """Uploads files not already there with the same size; returns (count, bytes) sent."""
    present = {a.filename: a.st_size for a in conn.sftp.listdir_attr(remote_dir)}
    count = size = 0
    for path in files:
        if path.name not in always and present.get(path.name) == path.stat().st_size:
            continue
        size += _put(conn, path, f"{remote_dir}/{path.name}")
        count += 1
    for name in present:  # an older edgeloop wheel must not shadow the new one
        if name.startswith("edgeloop-") and name not in {p.name for p in files}:
            conn.sftp.remove(f"{remote_dir}/{name}")
    return count, size


def _put(conn: SshConnection, local: Path, remote: str) -> int:
    if not local.is_file():
        raise ConfigError(f"{local}: missing; bootstrap needs the deploy/ folder of a checkout")
    partial = remote + ".partial"
    conn.sftp.put(str(local), partial)
    conn.sftp.posix_rename(partial, remote)
    return local.stat().st_size


def _q(text: str) -> str:
    """Shell-quotes, keeping a leading "~/" expandable by the remote shell."""
    if text.startswith("~/"):
        return "~/" + shlex.quote(text[2:])
    return shlex.quote(text)
