"""Turns what a user typed for DEVICE ("local", "host:port", a profile) into a client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional, Union

from toolkit.devices.profile import DeviceProfile, _looks_like_address, load_profile
from toolkit.errors import ConfigError
from toolkit.transport.credentials import AgentCredentials
from toolkit.transport.grpc_client import DeviceClient


def resolve_profile(spec: Union[str, DeviceProfile]) -> DeviceProfile:
    """ "local", "host:port", or a profile name/path → DeviceProfile."""
    if isinstance(spec, DeviceProfile):
        return spec
    if spec == "local":
        return DeviceProfile(name="local", transport="local")
    if _looks_like_address(spec):
        return DeviceProfile(name=spec, address=spec)
    return load_profile(spec)


@contextmanager
def open_device(
    spec: Union[str, DeviceProfile], credentials: Optional[AgentCredentials] = None
) -> Iterator[DeviceClient]:
    """Yields a connected client; starts and stops what it needs (local agent, tunnel).

    A profile with transport `serial` yields a client for the DUT on this host's port; one
    with a `target` yields a client for that attached device of the agent it reaches.
    `credentials`, for a gRPC profile reached directly: what to present instead of reading
    the profile's `tls` files and token variable (they were read elsewhere, e.g. by a Ray
    driver for its device actor)."""
    profile = resolve_profile(spec)
    if credentials is not None and (profile.transport != "grpc" or profile.tunnel):
        raise ConfigError(
            f"device {profile.name}: resolved credentials are for a gRPC agent reached "
            f"directly, not transport {profile.transport} / tunnel {profile.tunnel}"
        )
    if profile.transport == "serial":
        from toolkit.transport.serial_dut import open_serial_client

        with open_serial_client(profile) as client:
            yield client
        return
    if profile.target:
        from toolkit.transport.serial_dut import GatewayTargetClient

        with _open_agent(profile, credentials) as client:
            yield GatewayTargetClient(client, profile.target)
        return
    with _open_agent(profile, credentials) as client:
        yield client


@contextmanager
def _open_agent(
    profile: DeviceProfile, credentials: Optional[AgentCredentials] = None
) -> Iterator[DeviceClient]:
    if profile.transport == "local":
        from toolkit.transport.local import local_device

        with local_device(name=profile.name) as client:
            yield client
        return
    if profile.tunnel == "ssh":
        from toolkit.transport.ssh.tunnel import open_tunnel_client

        with open_tunnel_client(profile) as client:
            yield client
        return
    if profile.transport == "ssh":
        # No long-running agent: models go by SFTP, benchmarks run one-shot over SSH.
        from toolkit.transport.ssh.oneshot import open_oneshot_client

        with open_oneshot_client(profile) as client:
            yield client
        return
    with DeviceClient(
        profile.address, tls=profile.tls, name=profile.name, credentials=credentials
    ) as client:
        yield client
