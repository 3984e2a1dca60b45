"""What a client presents to an agent, read once on the host that can read it, then held as data.

A profile names its secrets by where they live (`tls.ca_file`, `tls.cert_file`, `tls.key_file`,
`tls.token_env`); the CLI's long-lived local agent keeps its token in a 0600 file under
`EDGELOOP_HOME`. `AgentCredentials.resolve` reads them here, into memory, and a client built
from the result reads no file and no environment variable. So a process that cannot read the
driver's files or see its environment (a Ray actor, on this node or another) reaches the agent
with the driver's credentials, handed over as data — nothing is written anywhere on the way.
Secret values never appear in `repr` (logs, tracebacks, Ray's task descriptions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from toolkit.devices.profile import TlsConfig
from toolkit.errors import ConfigError


@dataclass(frozen=True)
class AgentCredentials:
    """A bearer token and TLS material (PEM bytes), or nothing (plaintext loopback agent).

    Args:
        token: sent as `authorization: Bearer TOKEN` on every call; "" sends none.
        ca: PEM of the CA the agent's certificate chains to; None: plaintext channel.
        cert: the client certificate chain (mTLS), PEM.
        key: the client certificate's private key (mTLS), PEM.
        server_name: the name to check the agent's certificate against, when it is not the
            address's host (an SSH tunnel's 127.0.0.1, an IP).
    """

    token: str = field(default="", repr=False)
    ca: Optional[bytes] = field(default=None, repr=False)
    cert: Optional[bytes] = field(default=None, repr=False)
    key: Optional[bytes] = field(default=None, repr=False)
    server_name: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.token, str):
            raise TypeError(f"token: expected a string, got {type(self.token).__name__}")
        for name in ("ca", "cert", "key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bytes):
                raise TypeError(f"{name}: expected PEM bytes or None, got {type(value).__name__}")
        if (self.cert is None) != (self.key is None):
            raise TypeError("cert and key: a client certificate needs both, or neither")
        if self.cert is not None and self.ca is None:
            raise TypeError("cert: a client certificate needs TLS (ca)")

    @classmethod
    def resolve(
        cls, tls: Optional[TlsConfig] = None, token: str = "", where: str = ""
    ) -> AgentCredentials:
        """Reads what `tls` names (its files, and `$token_env` when no `token` is given).

        Args:
            tls: The profile's TLS settings; None: plaintext.
            token: A token already known (the long-lived local agent's); wins over
                `tls.token_env`.
            where: Prefix for errors (e.g. "device jetson-01: ").

        Raises:
            ConfigError: a file `tls` names cannot be read (the field and path named).
        """
        if tls is None:
            return cls(token=token)
        if not token and tls.token_env:
            token = os.environ.get(tls.token_env, "")
        if bool(tls.cert_file) != bool(tls.key_file):
            raise ConfigError(
                f"{where}tls.cert_file, tls.key_file: a client certificate needs both, or neither"
            )
        return cls(
            token=token,
            ca=_read(tls.ca_file, "tls.ca_file", where),
            cert=_read(tls.cert_file, "tls.cert_file", where) if tls.cert_file else None,
            key=_read(tls.key_file, "tls.key_file", where) if tls.key_file else None,
            server_name=tls.server_name,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The gRPC call metadata: the token, if any."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel_credentials(self) -> Any:
        """`grpc.ChannelCredentials` for a TLS channel; None for plaintext."""
        if self.ca is None:
            return None
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def __repr__(self) -> str:
        kind = "mTLS" if self.cert else "TLS" if self.ca else "plaintext"
        token = "a token" if self.token else "no token"
        name = f", server_name={self.server_name!r}" if self.server_name else ""
        return f"AgentCredentials({kind}, {token}{name})"


def _read(path: str, key: str, where: str) -> bytes:
    full = Path(path).expanduser()
    try:
        return full.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}{key}: cannot read {full}: {exc.strerror}") from None
