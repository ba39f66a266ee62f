"""What the managed server's protections cost per request.

1. The loopback guard (``workspaces_jobs.serverapp.LoopbackGuard``: Host and Origin
   checks) in process: N requests through the guard around a no-op ASGI app, against the
   app alone; the difference is the guard's cost per request.
2. End to end, on a dedicated managed server (credentials, CSRF tokens, CORS, the guard
   all on): the median latency of the Prefect client's ``read_flow_runs(limit=1)`` (a
   ``POST``, so it carries a CSRF token) and of an authenticated ``GET`` with httpx.

Usage: ``python benchmarks/server_guard.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, dedicated_server, print_table, row  # noqa: E402


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def guard_cost(n: int) -> tuple[float, float]:
    """Microseconds per request: (app alone, guard + app)."""
    from workspaces_jobs.serverapp import LoopbackGuard

    guarded = LoopbackGuard(_noop, 4200)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/flow_runs/filter",
        "headers": [
            (b"host", b"127.0.0.1:4200"),
            (b"accept", b"application/json"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Basic d3Nqb2JzOnNlY3JldA=="),
        ],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    async def timed(app: Any) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await app(scope, receive, send)
        return (time.perf_counter() - start) / n * 1e6

    async def both() -> tuple[float, float]:
        await timed(_noop)
        await timed(guarded)  # warm up
        bare = min([await timed(_noop) for _ in range(3)])
        guard = min([await timed(guarded) for _ in range(3)])
        return bare, guard

    return asyncio.run(both())


def end_to_end(n: int) -> tuple[float, float]:
    """Median milliseconds: (Prefect client POST with CSRF, authenticated httpx GET)."""
    import httpx
    from prefect.client.orchestration import get_client

    from workspaces_jobs import server

    with dedicated_server() as api:
        user, _, password = server.auth_string().partition(":")
        posts: list[float] = []
        gets: list[float] = []
        with get_client(sync_client=True) as client, httpx.Client(timeout=60) as http:
            client.read_flow_runs(limit=1)
            for _ in range(n):
                start = time.perf_counter()
                client.read_flow_runs(limit=1)
                posts.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                http.get(f"{api}/admin/version", auth=(user, password)).raise_for_status()
                gets.append((time.perf_counter() - start) * 1000)
        return statistics.median(posts), statistics.median(gets)


def main(argv: list[str]) -> list[Row]:
    quick = "--quick" in argv
    bare, guarded = guard_cost(20_000 if quick else 200_000)
    print(f"guard: app alone {bare:.2f} µs/request, with the guard {guarded:.2f} µs/request")
    post, get = end_to_end(50 if quick else 300)
    print(f"end to end: read_flow_runs {post:.1f} ms (median), authenticated GET {get:.1f} ms")
    return [
        row("server guard", "Host/Origin guard cost per request", guarded - bare, "µs", "<", 50),
        row("server guard", "read_flow_runs (auth + CSRF + guard), median", post, "ms"),
        row("server guard", "authenticated GET /admin/version, median", get, "ms"),
    ]


if __name__ == "__main__":
    print_table(main(sys.argv[1:]))
