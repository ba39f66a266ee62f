"""Request safety for a local web UI: CSRF on every POST, strict headers, known hosts only.

* **CSRF**: the server makes one random token per process. Every form that changes
  something carries it in a hidden field, and the page sets it in a ``SameSite=Strict``,
  ``HttpOnly`` cookie; a POST is accepted only when both are present and equal to the
  token (compared in constant time) and its ``Origin``, when sent, is this server. A page
  on another site can neither read the token nor make the browser send the cookie.
* **Hosts**: only the names the server was bound to (and the loopback names) are served,
  which stops DNS-rebinding pages from reading the UI under a name they control.
* **Headers**: a Content-Security-Policy that allows only this server's own CSS and
  script (no inline script or style) and connections back to it (the live log
  stream), no framing, no referrer to other sites, no MIME sniffing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

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


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """Host names the server answers to (``*`` only for a wildcard bind without names)."""
    names = [*LOOPBACK_HOSTS, *(h.strip() for h in extra if h.strip())]
    if bind_host in WILDCARD_BINDS:
        if not list(extra):
            names.append("*")
    elif bind_host not in names:
        names.append(bind_host)
    return list(dict.fromkeys(names))


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
