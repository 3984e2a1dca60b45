"""Who may read the dashboard: loopback by default; beyond loopback TLS and a bearer token.

The policy is the agent's (`device_agent.server.auth`): on loopback the host is the boundary;
the dashboard refuses to listen on any other address without both TLS (`--tls-cert`,
`--tls-key`) and a token, read once from a file that other users cannot read (the agent's
`--token-file` rules), so the token never crosses a network in cleartext. A browser sends the
token once as `?token=...`; the dashboard answers with a cookie (HttpOnly, SameSite=Strict,
Secure under TLS) and a redirect to the same page without it, so the token does not stay in
the address bar, the history or any link. Scripts send `Authorization: Bearer <token>`. Every
comparison is constant-time.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Optional
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from toolkit.errors import SetupError

COOKIE = "edgeloop_dashboard"
QUERY = "token"


def load_dashboard_token(token_file: Optional[Path]) -> Optional[str]:
    """The token in `token_file` (None without a file).

    Raises:
        SetupError: the file is missing, empty, or readable by other users (one line).
    """
    if token_file is None:
        return None
    from device_agent.server.auth import AuthConfigError, load_token

    try:
        token = load_token(Path(token_file))
    except AuthConfigError as exc:
        raise SetupError(str(exc)) from None
    assert token is not None
    return token.value


def is_loopback(host: str) -> bool:
    from device_agent.server.auth import is_loopback as agent_is_loopback

    return agent_is_loopback(host)


def check_listen(host: str, token: Optional[str], tls: bool = False) -> str:
    """One line describing the access policy.

    Raises:
        SetupError: beyond loopback without TLS or without a token (one line naming what is
            missing).
    """
    if not is_loopback(host):
        missing = [
            *(["TLS (--tls-cert and --tls-key)"] if not tls else []),
            *(["a token (--token-file FILE)"] if not token else []),
        ]
        if missing:
            raise SetupError(
                f"refusing to serve the dashboard on {host} without {' and '.join(missing)}; "
                "or serve on 127.0.0.1 and reach it through SSH"
            )
    scheme = "TLS" if tls else "plain HTTP on loopback"
    if token:
        return f"{scheme}, bearer token required (header, cookie, or ?token= once)"
    return f"{scheme}, loopback only, no token"


def _same(given: Optional[str], expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class TokenMiddleware:
    """Rejects requests without the token (401); turns `?token=` into a cookie and a redirect
    to the URL without it (also when the request carries the token another way)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._check(request)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _check(self, request: Request) -> Optional[Response]:
        if QUERY in request.query_params:
            return self._from_query(request)
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and _same(header[7:].strip(), self.token):
            return None
        if _same(request.cookies.get(COOKIE), self.token):
            return None
        return _denied()

    def _from_query(self, request: Request) -> Response:
        """`?token=`: the right one becomes a cookie and a redirect without it; a wrong one is
        refused (a right cookie does not make a wrong `?token=` pass)."""
        if _same(request.query_params.get(QUERY), self.token):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != QUERY]
            raw = request.scope.get("raw_path") or request.url.path.encode()
            path = "/" + raw.decode("latin-1").lstrip("/")  # never '//host': same site only
            target = path + (f"?{urlencode(rest)}" if rest else "")
            redirect = RedirectResponse(target, status_code=303)
            redirect.set_cookie(
                COOKIE,
                self.token,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return redirect
        return _denied()


def _denied() -> Response:
    return PlainTextResponse(
        "edgeloop dashboard: token required (open the page once with "
        "?token=..., or send Authorization: Bearer ...)",
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )
