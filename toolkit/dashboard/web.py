"""What every dashboard response carries and what every request must name.

- `HostCheckMiddleware`: the `Host` header must be one of the names the dashboard serves
  (loopback names by default, plus the bind address and `--server-name`s), so a web page whose
  DNS name is rebound to 127.0.0.1 cannot read the results database from the user's browser.
- `SecurityHeadersMiddleware`: Content-Security-Policy (scripts only from the dashboard's own
  files, no framing), X-Frame-Options, X-Content-Type-Options: nosniff and no Referer on every
  response, errors included. A response that sets its own CSP (a gate report) keeps it.

Both are plain ASGI middleware: streamed responses (CSV export) pass through unbuffered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; font-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
"""Pages: scripts only from the dashboard's own files (no inline script, no eval); plotly sets
styles inline, which cannot run code."""

REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; " + (
    "frame-ancestors 'none'"
)
"""A gate report (a file on disk): an opaque sandboxed origin without scripts, so a report
cannot read or act on the dashboard's origin."""

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def served_names(host: str, server_names: Iterable[str] = ()) -> frozenset[str]:
    """The `Host` names the dashboard answers to: loopback names, the bind address (unless it
    is a wildcard) and `server_names`, lower-cased, without brackets or a trailing dot."""
    names = set(LOOPBACK_NAMES)
    for name in (host, *server_names):
        normal = _normal(name)
        if normal not in WILDCARDS:
            names.add(normal)
    return frozenset(names)


def host_name(header: str) -> Optional[str]:
    """The name in a `Host` header without its port ('[::1]:8750' -> '::1'); None when it is
    not a host[:port] at all."""
    header = header.strip()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[1:end], header[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return _normal(name)
    name, colon, port = header.rpartition(":")
    if not colon:
        name = port
    elif not port.isdigit() or ":" in name:
        return None
    return _normal(name) or None


def _normal(name: str) -> str:
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name[:-1] if name.endswith(".") else name


class HostCheckMiddleware:
    """400 for a request whose `Host` is not a name the dashboard serves (DNS rebinding)."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        if host_name(header) in self.names:
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            f"edgeloop dashboard: Host {header[:100]!r} is not a name this dashboard serves "
            f"({', '.join(sorted(self.names))}); start it with --server-name NAME to add one",
            status_code=400,
        )
        await response(scope, receive, send)


class SecurityHeadersMiddleware:
    """Adds the CSP, framing, nosniff and referrer headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "content-security-policy" not in headers:
                    headers["content-security-policy"] = PAGE_CSP
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
