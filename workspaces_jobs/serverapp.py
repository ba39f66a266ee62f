"""The managed server's process: ``python -m workspaces_jobs.serverapp PORT``.

Prefect's API and UI (``prefect.server.api.server.create_app``, exactly what
``prefect server start`` serves in the foreground) behind :class:`LoopbackGuard`, run by
uvicorn on 127.0.0.1. Prefect 3.9.1 checks credentials (``PREFECT_SERVER_API_AUTH_STRING``)
and CORS, but not the ``Host`` header, so a DNS-rebinding page (``evil.example`` resolved
to 127.0.0.1) would be same-origin with the API; and CORS alone does not stop a "simple"
cross-site POST from being *sent*. The guard refuses, before Prefect sees them:

* any request or WebSocket whose ``Host`` is not ``127.0.0.1:PORT`` or ``localhost:PORT``
  (400);
* any request or WebSocket that carries an ``Origin`` other than the server's own UI
  (``http://127.0.0.1:PORT`` / ``http://localhost:PORT``) — including ``null`` (403).

Requests without ``Origin`` (every non-browser client, and browsers' same-origin GETs)
pass to Prefect, which then requires the credentials.

The Prefect UI asks for those credentials on its ``/login`` page and keeps them in the
browser (``localStorage["prefect-password"]``). The classic UI (the one job links point
to) shows "Page not found" for a deep link opened before that; so the guard adds one
line of script to its HTML pages that sends a browser without credentials to
``/login?redirect=<the link>`` — a printed job link logs in once, then opens the job.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LoopbackGuard:
    """ASGI middleware: only this machine's own names for the server, only its own UI."""

    def __init__(self, app: ASGIApp, port: int) -> None:
        self.app = app
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{host}" for host in self.hosts}

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        hosts: list[str] = []
        origins: list[str] = []
        for key, value in scope.get("headers") or []:
            if key == b"host":
                hosts.append(value.decode("latin-1").lower())
            elif key == b"origin":
                origins.append(value.decode("latin-1").lower())
        if len(hosts) != 1 or hosts[0] not in self.hosts:
            return 400, "Invalid host header: this server answers only to 127.0.0.1 or localhost"
        if len(origins) > 1 or (origins and origins[0] not in self.origins):
            return 403, "Cross-origin request refused: only this server's own UI may call it"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refused = self.refusal(scope)
            if refused is not None:
                await self._refuse(scope, send, *refused)
                return
        if _is_classic_ui_page(scope):
            scope = dict(scope)  # the page must come uncompressed to add the line
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"accept-encoding"]
            send = _with_login_redirect(send)
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, text: str) -> None:
        if scope["type"] == "websocket":  # closing before accept answers HTTP 403
            await send({"type": "websocket.close", "code": 1008, "reason": text[:100]})
            return
        body = text.encode() + b"\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


#: Sends a browser without the UI's stored credentials to the login page, then back.
LOGIN_REDIRECT = (
    b"<script>if(!localStorage.getItem('prefect-password')&&location.pathname!=='/login')"
    b"location.replace('/login?redirect='+encodeURIComponent(location.pathname+"
    b"location.search))</script>"
)


def _is_classic_ui_page(scope: Scope) -> bool:
    path = str(scope.get("path", ""))
    if scope["type"] != "http" or scope.get("method") != "GET":
        return False
    if path.startswith(("/api/", "/v2/", "/assets/", "/ico/")) or path in ("/api", "/v2"):
        return False
    accept = dict(scope.get("headers") or []).get(b"accept", b"")
    return b"text/html" in accept


def _with_login_redirect(send: Send) -> Send:
    """Wrap ``send`` so an HTML answer gets :data:`LOGIN_REDIRECT` right after ``<head>``."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or [])
            if headers.get(b"content-type", b"").startswith(b"text/html"):
                start = message
                return
        elif message["type"] == "http.response.body" and start is not None:
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks).replace(b"<head>", b"<head>" + LOGIN_REDIRECT, 1)
            kept = [(k, v) for k, v in start.get("headers") or [] if k != b"content-length"]
            kept.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": kept})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return wrapped


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python -m workspaces_jobs.serverapp PORT")
    port = int(sys.argv[1])
    import uvicorn
    from prefect.server.api.server import create_app
    from prefect.settings import get_current_settings

    settings = get_current_settings().server
    uvicorn.run(
        LoopbackGuard(create_app(final=True), port),
        host="127.0.0.1",
        port=port,
        timeout_keep_alive=settings.api.keepalive_timeout,
        ws_ping_interval=settings.api.websocket_ping_interval,
        ws_ping_timeout=settings.api.websocket_ping_timeout,
        log_level=str(settings.logging_level).lower(),
    )


if __name__ == "__main__":
    main()
