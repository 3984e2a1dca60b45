"""An SSH connection to a device (paramiko): verified host keys, key auth, optional jump host."""

from __future__ import annotations

import getpass
import os
import threading
from dataclasses import dataclass
from typing import Optional

import paramiko

from toolkit.devices.profile import SshConfig
from toolkit.errors import (
    AgentError,
    AgentTimeoutError,
    AgentUnreachableError,
    ConfigError,
    HostKeyError,
)
from toolkit.transport.ssh.hostkeys import (
    VerifyingPolicy,
    host_entry,
    known_hosts_path,
    mismatch_error,
)

DEFAULT_CONNECT_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did: its exit status and its whole output (decoded UTF-8)."""

    command: str
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Endpoint:
    """user@host:port of one SSH hop."""

    user: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, spec: str, default_user: str) -> Endpoint:
        """Parses "user@host:port", "user@host" or "host" (port 22)."""
        user, _, rest = spec.rpartition("@")
        host, sep, port = rest.rpartition(":")
        if not sep:
            host, port = rest, "22"
        if not host or not port.isdigit():
            raise ConfigError(f"ssh.jump_host: expected 'user@host:port', got {spec!r}")
        return cls(user or default_user, host, int(port))


class SshConnection:
    """One authenticated SSH session to a device; a context manager that closes it.

    Args:
        config: The profile's `ssh` section (host, port, user, key file, known_hosts, jump host).
        accept_new_host_key: Record an unknown host key in known_hosts instead of failing.
        timeout_s: TCP connect and handshake timeout in seconds (default 15).
    """

    def __init__(self, config: SshConfig, accept_new_host_key: bool = False,
                 timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self.config = config
        self.endpoint = Endpoint(config.user or getpass.getuser(), config.host, int(config.port))
        self.known_hosts = known_hosts_path(config.known_hosts)
        self._accept_new = accept_new_host_key
        self._timeout_s = timeout_s
        self._jump: Optional[paramiko.SSHClient] = None
        self._sftp: Optional[paramiko.SFTPClient] = None
        sock = None
        if config.jump_host:
            jump = Endpoint.parse(config.jump_host, self.endpoint.user)
            self._jump = self._open(jump, None)
            sock = self._direct_tcpip(self._jump, self.endpoint.host, self.endpoint.port)
        self.client = self._open(self.endpoint, sock)

    def _open(self, hop: Endpoint, sock: Optional[paramiko.Channel]) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(VerifyingPolicy(self.known_hosts, self._accept_new))
        key_file = self.config.key_file
        try:
            client.connect(
                hop.host, port=hop.port, username=hop.user, sock=sock, timeout=self._timeout_s,
                banner_timeout=self._timeout_s, auth_timeout=self._timeout_s,
                key_filename=key_file and str(_expand(key_file)),
                look_for_keys=not key_file, allow_agent=not key_file,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise mismatch_error(host_entry(hop.host, hop.port), exc, self.known_hosts) from None
        except paramiko.AuthenticationException:
            client.close()
            raise AgentUnreachableError(
                f"{hop}: SSH authentication failed with key {key_file or '(agent/default keys)'}: "
                "the device does not accept it; check ssh.user and ssh.key_file"
            ) from None
        except (FileNotFoundError, paramiko.PasswordRequiredException) as exc:
            client.close()
            raise ConfigError(f"ssh.key_file: cannot use {key_file!r} for {hop}: {exc}") from None
        except HostKeyError:
            client.close()
            raise
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            raise AgentUnreachableError(f"{hop}: cannot open an SSH session: {exc}") from None
        except BaseException:
            client.close()
            raise
        return client

    def _direct_tcpip(self, via: paramiko.SSHClient, host: str, port: int) -> paramiko.Channel:
        transport = via.get_transport()
        assert transport is not None
        try:
            return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                          timeout=self._timeout_s)
        except (paramiko.SSHException, OSError) as exc:
            raise AgentUnreachableError(
                f"{self.endpoint}: jump host {self.config.jump_host} cannot reach it: {exc}"
            ) from None

    @property
    def transport(self) -> paramiko.Transport:
        """The live paramiko transport (for port forwards)."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise AgentUnreachableError(f"{self.endpoint}: SSH connection is closed")
        return transport

    def run(self, command: str, timeout_s: float = 600.0, check: bool = True,
            stdin: Optional[bytes] = None) -> CommandResult:
        """Runs a shell command on the device and waits for it.

        Args:
            command: The command line (already shell-quoted).
            timeout_s: Longest silence on the channel in seconds before AgentTimeoutError.
            check: Raise AgentError when the exit status is not 0.
            stdin: Bytes written to the command's standard input, then closed.
        """
        try:
            chan = self.transport.open_session(timeout=self._timeout_s)
            chan.settimeout(timeout_s)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            err_chunks: list[bytes] = []
            reader = threading.Thread(target=_drain_quietly, args=(chan.recv_stderr, err_chunks),
                                      daemon=True)
            reader.start()
            out_chunks: list[bytes] = []
            _drain(chan.recv, out_chunks)
            reader.join(timeout_s)
            status = chan.recv_exit_status()
            chan.close()
        except TimeoutError:
            raise AgentTimeoutError(
                f"{self.endpoint}: command did not finish within {timeout_s:g} s: {command[:80]}"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise AgentUnreachableError(f"{self.endpoint}: SSH command failed: {exc}") from None
        result = CommandResult(command, status, _text(out_chunks), _text(err_chunks))
        if check and status != 0:
            tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
            raise AgentError(
                f"{self.endpoint}: command exited {status}: {command[:120]}: {' | '.join(tail)}"
            )
        return result

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """An SFTP session on this connection (opened once)."""
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (paramiko.SSHException, OSError) as exc:
                raise AgentUnreachableError(f"{self.endpoint}: cannot open SFTP: {exc}") from None
        return self._sftp

    def remote_path(self, path: str) -> str:
        """Expands a leading "~" to the remote home directory (SFTP does not)."""
        if path == "~" or path.startswith("~/"):
            return self.sftp.normalize(".") + path[1:]
        return path

    def close(self) -> None:
        """Closes SFTP, the session and the jump host session."""
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()
        if self._jump is not None:
            self._jump.close()

    def __enter__(self) -> SshConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(config: SshConfig, accept_new_host_key: bool = False,
            timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> SshConnection:
    """Opens an SSH connection to a device; see SshConnection."""
    return SshConnection(config, accept_new_host_key=accept_new_host_key, timeout_s=timeout_s)


def _expand(path: str) -> str:
    return os.path.expanduser(path)


def _drain(recv, sink: list[bytes]) -> None:  # noqa: ANN001 - a paramiko recv method
    while True:
        data = recv(65536)
        if not data:
            return
        sink.append(data)


def _drain_quietly(recv, sink: list[bytes]) -> None:  # noqa: ANN001
    try:
        _drain(recv, sink)
    except (TimeoutError, OSError, EOFError):
        return


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", errors="replace")
