"""Host-key verification against known_hosts: an unknown key is an error unless opted in."""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import paramiko

from toolkit.errors import HostKeyError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
_write_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA256 fingerprint as OpenSSH prints it ("SHA256:base64-without-padding")."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_path(configured: str | None) -> Path:
    """The known_hosts file to use: the profile's, else ~/.ssh/known_hosts."""
    return Path(configured or DEFAULT_KNOWN_HOSTS).expanduser()


def host_entry(host: str, port: int) -> str:
    """The name known_hosts records a host under ("host" on port 22, else "[host]:port")."""
    return host if port == 22 else f"[{host}]:{port}"


class VerifyingPolicy(paramiko.MissingHostKeyPolicy):
    """Rejects unknown host keys with their fingerprint; records them when `accept_new` is set.

    Args:
        known_hosts: File that receives newly accepted keys.
        accept_new: Records an unknown key instead of failing (the `--accept-new-host-key` opt-in).
    """

    def __init__(self, known_hosts: Path, accept_new: bool = False) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self.accept_new:
            raise HostKeyError(
                f"{hostname}: unknown SSH host key {key.get_name()} {fingerprint(key)} "
                f"(not in {self.known_hosts}); verify it and pass --accept-new-host-key "
                "to record it"
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        with _write_lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with self.known_hosts.open("a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def mismatch_error(
    entry: str, exc: paramiko.BadHostKeyException, known_hosts: Path
) -> HostKeyError:
    """A HostKeyError for a key that differs from the one known_hosts holds."""
    return HostKeyError(
        f"{entry}: SSH host key {fingerprint(exc.key)} does NOT match the one in {known_hosts} "
        f"({fingerprint(exc.expected_key)}); if the device was reinstalled, remove its line "
        f"(ssh-keygen -R '{entry}' -f {known_hosts}), otherwise suspect an attack"
    )
