"""Who may talk to the agent: the listening policy, the bearer token and its interceptor.

Policy: on loopback anything goes (the SSH tunnel or the local host is the boundary; a
token, when given, is still required). Beyond loopback the agent needs TLS *and* client
authentication (mutual TLS with a client CA, or a bearer token); it refuses to start with
one line naming what is missing. The token is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

TOKEN_ENV = "EDGELOOP_AGENT_TOKEN"
UNAUTHENTICATED_MESSAGE = "missing or wrong agent token"


class AuthConfigError(ValueError):
    """The agent's listening/authentication settings are unsafe or unusable; one line."""


class InsecureBindError(AuthConfigError):
    """Asked to listen beyond loopback without TLS and client authentication."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Token:
    """A bearer token and where it came from (for the start line; the value never prints)."""

    value: str
    source: str

    def __repr__(self) -> str:
        return f"Token(source={self.source!r})"


def load_token(token_file: Optional[Path]) -> Optional[Token]:
    """The token from `token_file` (read once, stripped) or else from $EDGELOOP_AGENT_TOKEN.

    Raises:
        AuthConfigError: the file is missing, empty, or readable or writable by other users.
    """
    if token_file is not None:
        path = Path(token_file).expanduser()
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthConfigError(f"--token-file {path}: cannot read it ({exc})") from None
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            raise AuthConfigError(
                f"--token-file {path}: readable or writable by every user "
                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
            )
        if not text:
            raise AuthConfigError(f"--token-file {path}: empty")
        return Token(text, f"--token-file {path}")
    value = os.environ.get(TOKEN_ENV, "").strip()
    return Token(value, f"${TOKEN_ENV}") if value else None


def check_listen_policy(
    host: str, tls: bool, client_ca: Optional[Path], token: Optional[Token]
) -> str:
    """Returns the one-line description of the authentication in force, or raises
    InsecureBindError naming what is missing beyond loopback."""
    if not is_loopback(host):
        missing = []
        if not tls:
            missing.append("TLS (--tls-cert and --tls-key)")
        if client_ca is None and token is None:
            missing.append(
                f"client authentication (--client-ca for mutual TLS, or a token in "
                f"${TOKEN_ENV} or --token-file)"
            )
        if missing:
            raise InsecureBindError(
                f"refusing to listen on {host} without {' and '.join(missing)}; "
                "or listen on 127.0.0.1 and reach the agent through SSH"
            )
    parts = ["TLS" if tls else "plaintext on loopback"]
    if client_ca is not None:
        parts.append(f"client certificates signed by {client_ca}")
    if token is not None:
        parts.append(f"bearer token from {token.source}")
    if client_ca is None and token is None:
        parts.append("no client authentication (loopback only)")
    return ", ".join(parts)


async def _deny(request_or_iterator, context) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


_DENY_FACTORY = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls whose `authorization: Bearer <token>` metadata does not match
    (UNAUTHENTICATED), comparing in constant time, before the method runs."""

    def __init__(self, token: Token) -> None:
        self._expected = f"Bearer {token.value}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        offered = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                offered = value if isinstance(value, str) else ""
        handler = await continuation(handler_call_details)
        if hmac.compare_digest(offered.encode("utf-8", "replace"), self._expected):
            return handler
        if handler is None:
            return None
        factory = _DENY_FACTORY[(handler.request_streaming, handler.response_streaming)]
        return factory(_deny)
