"""Request safety for a local web UI: CSRF on every POST, strict headers, known hosts only.

* **CSRF**: the server makes one random token per process. Every form that changes
  something carries it in a hidden field, and the page sets it in a ``SameSite=Strict``,
  ``HttpOnly`` cookie; a POST is accepted only when both are present and equal to the
  token (compared in constant time) and its ``Origin``, when sent, is this server. A page
  on another site can neither read the token nor make the browser send the cookie.
* **Hosts**: only the names the server was bound to (and the loopback names) are served,
  which stops DNS-rebinding pages from reading the UI under a name they control; any
  other ``Host`` gets 400. A wildcard bind (``--host 0.0.0.0``) never means "any name":
  it answers to this machine's host names, the ``--allow-host`` names, and the address
  the request actually arrived on (``http://192.168.1.5:8787/`` typed by a colleague),
  never to a name a DNS-rebinding page controls.
* **Headers**: a Content-Security-Policy that allows only this server's own CSS and
  script (no inline script or style) and connections back to it (the live log
  stream), no framing, no referrer to other sites, no MIME sniffing.
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_FIELD = "csrf"
CSRF_COOKIE = "wsjobs_csrf"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")

HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chrome send Origin: null
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def machine_names() -> list[str]:
    """This machine's host names (short and fully qualified), lower-case."""
    names = [socket.gethostname(), socket.getfqdn()]
    return [n.lower() for n in dict.fromkeys(names) if n and n != "localhost"]


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """Host names the server answers to; never ``*`` (see :class:`HostGuard`)."""
    names = [*LOOPBACK_HOSTS, *(h.strip().lower() for h in extra if h.strip())]
    if bind_host in WILDCARD_BINDS:
        names += machine_names()
    elif bind_host.lower() not in names:
        names.append(bind_host.lower())
    return list(dict.fromkeys(names))


def host_of(header: str) -> str:
    """The name in a ``Host`` header, without the port (``[::1]:8787`` → ``[::1]``)."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostGuard:
    """ASGI middleware: 400 for a request whose ``Host`` is not one of ``allowed``.

    With ``own_address`` (a wildcard bind), the address the connection arrived on is
    accepted too: a DNS-rebinding page reaches that address only under its own name."""

    def __init__(self, app: ASGIApp, *, allowed: Iterable[str], own_address: bool) -> None:
        self.app = app
        self.allowed = frozenset(allowed)
        self.own_address = own_address

    def allows(self, header: str, server: tuple[str, int] | None) -> bool:
        host = host_of(header)
        if host in self.allowed:
            return True
        if self.own_address and server and host:
            own = server[0].lower()
            return host in (own, f"[{own}]")
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = ""
        for key, value in scope.get("headers", []):
            if key == b"host":
                header = value.decode("latin-1")
                break
        if self.allows(header, scope.get("server")):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "400 Bad Request: unknown Host header. Open this view by one of its names,"
            " or start it with --allow-host NAME.",
            status_code=400,
        )
        await response(scope, receive, send)


def csrf_ok(
    token: str,
    form: Mapping[str, Sequence[str]],
    cookies: Mapping[str, str],
    headers: Mapping[str, str],
) -> bool:
    """True when a POST carries this process's token in its form and its cookie, and
    does not come from another origin."""
    sent = (form.get(CSRF_FIELD) or [""])[-1]
    cookie = cookies.get(CSRF_COOKIE, "")
    if not (sent and cookie):
        return False
    if not (hmac.compare_digest(sent, token) and hmac.compare_digest(cookie, token)):
        return False
    origin = headers.get("origin")
    if origin and origin != "null":
        host = headers.get("host", "")
        return urlsplit(origin).netloc == host
    return origin != "null"


class SecurityHeaders:
    """ASGI middleware adding :data:`HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                present = {k.lower() for k, _ in raw}
                for name, value in HEADERS.items():
                    if name.lower().encode() not in present:
                        raw.append((name.lower().encode(), value.encode()))
                message["headers"] = raw
            await send(message)

        await self.app(scope, receive, send_with_headers)
