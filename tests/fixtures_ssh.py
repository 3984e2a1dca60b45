"""A REAL OpenSSH sshd on 127.0.0.1 for tests, with generated host and user keys.

Import the fixtures into a test module (`from tests.fixtures_ssh import sshd  # noqa: F401`).
The server runs as root on a free port; tests that need it are skipped with a reason when the
process is not root or Debian's `openssh-server` is not installed (`deploy/ci-system-deps.sh`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from toolkit.devices.profile import SshConfig

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
READY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class SshServer:
    """A running sshd and the files a client needs to reach it."""

    host: str
    port: int
    user: str
    user_key: Path          # private key sshd accepts
    wrong_key: Path         # a valid key sshd does NOT accept
    known_hosts: Path       # holds the server's host key
    empty_known_hosts: Path  # knows nothing: the server's key is unknown there
    host_fingerprint: str   # "SHA256:..." as ssh-keygen -l prints it
    workdir: Path
    log: list = field(default_factory=list, compare=False)  # sshd's log lines, live

    def accepted_logins(self) -> int:
        """How many publickey logins sshd has accepted so far."""
        return sum("Accepted publickey" in line for line in self.log)

    def ssh_config(self, **overrides: object) -> SshConfig:
        """An SshConfig that reaches this server with the accepted key and known host key."""
        values = dict(
            host=self.host, port=self.port, user=self.user, key_file=str(self.user_key),
            known_hosts=str(self.known_hosts),
        )
        values.update(overrides)
        return SshConfig(**values)  # type: ignore[arg-type]


def find_sshd() -> str | None:
    """Path of the sshd binary, or None."""
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("sshd")


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_config(workdir: Path, port: int) -> Path:
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {workdir / 'host_key'}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "AllowTcpForwarding yes",
        "MaxStartups 50:30:100",
        "MaxSessions 50",
        "Subsystem sftp internal-sftp",
        "LogLevel INFO",
        "",
    ]))
    return config


class _SshdProcess:
    """sshd -D -e in the foreground; ready when it logs that it listens."""

    def __init__(self, binary: str, config: Path, port: int) -> None:
        self.port = port
        self.ready = threading.Event()
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if f"listening on 127.0.0.1 port {self.port}" in line:
                self.ready.set()
        self.ready.set()  # exited: wake the waiter, who checks poll()

    def wait_ready(self) -> bool:
        self.ready.wait(READY_TIMEOUT_S)
        return self.proc.poll() is None and self.ready.is_set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sshd(workdir: Path) -> tuple[SshServer, _SshdProcess]:
    """Generates keys and starts sshd on a free loopback port (retries when the port is taken)."""
    binary = find_sshd()
    if binary is None:
        raise RuntimeError("sshd not found; run deploy/ci-system-deps.sh")
    for name in ("host_key", "user_key", "wrong_key"):
        _keygen(workdir / name, f"edgeloop-test-{name}")
    (workdir / "authorized_keys").write_text((workdir / "user_key.pub").read_text())
    host_pub = (workdir / "host_key.pub").read_text().split()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    last_log = ""
    for _ in range(3):
        port = _free_port()
        proc = _SshdProcess(binary, _write_config(workdir, port), port)
        if proc.wait_ready():
            known = workdir / "known_hosts"
            known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
            empty = workdir / "known_hosts_empty"
            empty.write_text("")
            server = SshServer(
                host="127.0.0.1", port=port, user=_current_user(), user_key=workdir / "user_key",
                wrong_key=workdir / "wrong_key", known_hosts=known, empty_known_hosts=empty,
                host_fingerprint=_fingerprint(workdir / "host_key.pub"), workdir=workdir,
                log=proc.lines,
            )
            return server, proc
        last_log = " | ".join(proc.lines[-5:])
        proc.stop()
    raise RuntimeError(f"sshd did not start on 127.0.0.1: {last_log}")


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def sshd_skip_reason() -> str | None:
    """Why a real sshd cannot run here, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a real sshd on 127.0.0.1 needs root (run the tests as root, e.g. in CI)"
    if find_sshd() is None:
        return "sshd not installed; run deploy/ci-system-deps.sh (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not installed; run deploy/ci-system-deps.sh"
    return None


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A running OpenSSH sshd on 127.0.0.1 (session scope), stopped after the tests."""
    reason = sshd_skip_reason()
    if reason:
        pytest.skip(reason)
    server, proc = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        proc.stop()
