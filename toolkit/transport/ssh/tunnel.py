"""A local port forward (like `ssh -L`) to the agent on the device's loopback, over SSH."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import paramiko

from toolkit.devices.profile import DeviceProfile, SshConfig
from toolkit.errors import AgentUnreachableError, ConfigError
from toolkit.transport.ssh.connection import SshConnection, connect

if TYPE_CHECKING:
    from toolkit.transport.grpc_client import DeviceClient

_CHUNK = 65536


class PortForward:
    """Serves 127.0.0.1:<free port> on the host; each connection becomes a direct-tcpip channel.

    Args:
        connection: An open SSH connection to the device.
        remote_port: The agent's port on the device's loopback (e.g. 50051).
        remote_host: Address the device connects to (default its loopback).
    """

    def __init__(self, connection: SshConnection, remote_port: int,
                 remote_host: str = "127.0.0.1") -> None:
        self.connection = connection
        self.remote = (remote_host, int(remote_port))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.local_port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._pumps: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, name="ssh-forward", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """ "127.0.0.1:PORT" for a gRPC client on the host."""
        return f"127.0.0.1:{self.local_port}"

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return  # listener closed
            try:
                chan = self.connection.transport.open_channel(
                    "direct-tcpip", self.remote, peer, timeout=15.0)
            except (paramiko.SSHException, OSError, AgentUnreachableError):
                conn.close()  # the client sees a reset and reports the device unreachable
                continue
            pump = threading.Thread(target=_pump, args=(conn, chan, self._closed), daemon=True)
            pump.start()
            self._pumps = [t for t in self._pumps if t.is_alive()] + [pump]

    def close(self) -> None:
        """Stops accepting and ends every forwarded connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        for pump in self._pumps:
            pump.join(5)

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pump(sock: socket.socket, chan: paramiko.Channel, closed: threading.Event) -> None:
    """Copies bytes both ways until either side closes (or the forward is closed)."""
    try:
        while not closed.is_set():
            ready, _, _ = select.select([sock, chan], [], [], 0.5)
            if sock in ready:
                data = sock.recv(_CHUNK)
                if not data:
                    break
                chan.sendall(data)
            if chan in ready:
                data = chan.recv(_CHUNK)
                if not data:
                    break
                sock.sendall(data)
    except (OSError, paramiko.SSHException):
        pass
    finally:
        chan.close()
        sock.close()


@contextlib.contextmanager
def ssh_tunnel(config: SshConfig, remote_port: int | None = None,
               accept_new_host_key: bool = False) -> Iterator[str]:
    """Opens an SSH connection and a forward to the agent; yields the local "127.0.0.1:PORT".

    Args:
        config: The profile's `ssh` section; `agent_port` is used when remote_port is None.
        remote_port: The agent's port on the device's loopback.
        accept_new_host_key: Record an unknown host key instead of failing.
    """
    with connect(config, accept_new_host_key=accept_new_host_key) as conn:
        with PortForward(conn, remote_port or config.agent_port) as forward:
            yield forward.address


@contextlib.contextmanager
def open_tunnel_client(profile: DeviceProfile, accept_new_host_key: bool = False,
                       connect_timeout_s: float = 10.0) -> Iterator[DeviceClient]:
    """Yields a DeviceClient to the agent on the device's loopback, through an SSH forward.

    Args:
        profile: A profile with an `ssh` section (`tunnel: ssh`); `ssh.agent_port` is the
            agent's port on the device.
        accept_new_host_key: Record an unknown host key instead of failing.
        connect_timeout_s: How long to wait for the agent to answer (seconds, default 10).
    """
    from toolkit.transport.grpc_client import DeviceClient

    if profile.ssh is None:
        raise ConfigError(
            f"{profile.source or profile.name}: ssh: `tunnel: ssh` needs an ssh section")
    with ssh_tunnel(profile.ssh, accept_new_host_key=accept_new_host_key) as address:
        with DeviceClient(address, tls=profile.tls, connect_timeout_s=connect_timeout_s,
                          name=profile.name) as client:
            yield client
