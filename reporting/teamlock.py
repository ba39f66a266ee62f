"""The sync lock of a team history: a PostgreSQL advisory lock in the catalog's database.

Why (issue 17): the writer lock of :mod:`reporting.store` is a file lock, which only the
processes of one host see. With the catalog in PostgreSQL, two hosts' syncs can commit
at the same moment, and DuckLake does not see two inserts of the same *new* job as a
conflict: measured with a real PostgreSQL 15 here, two processes that upserted the same
five new jobs at once both committed, leaving ten rows (when the rows already existed,
both deleted them and one commit failed, as it should). PostgreSQL's advisory locks are
held by a database session and seen by every host that reaches the catalog, so the sync
takes one for its pass: the second host waits like a second local sync does, and is told
who holds it (the holder's ``application_name``: host and PID).

The lock is held by a dedicated connection (``asyncpg``, which Prefect already brings)
in a thread of its own with its own event loop, so it works the same from a plain
command and from inside the sync flow's running loop; a dead holder's session ends and
PostgreSQL drops its lock.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: The advisory lock's two keys ("wsjb", 17): one lock per PostgreSQL database.
KEYS = (0x77736A62, 17)
_POLL = 0.1
_PARAMS = {"host": "host", "port": "port", "user": "user", "password": "password",
           "dbname": "database"}  # fmt: skip


def connect_kwargs(conninfo: str) -> dict[str, Any]:
    """asyncpg's arguments for a libpq ``key=value`` string (or a ``postgresql://`` URI)."""
    if conninfo.startswith(("postgres://", "postgresql://")):
        return {"dsn": conninfo}
    out: dict[str, Any] = {}
    for word in shlex.split(conninfo):
        key, _, value = word.partition("=")
        if key in _PARAMS:
            out[_PARAMS[key]] = int(value) if key == "port" else value
    return out


def me() -> str:
    """How the holder is named to a waiting host."""
    return f"wsjobs sync on {socket.gethostname()} (PID {os.getpid()})"


@contextmanager
def advisory_lock(
    conninfo: str,
    *,
    timeout: float,
    on_wait: Callable[[str], None],
    locked: Callable[[str], Exception],
    unreachable: Callable[[str], Exception],
) -> Iterator[None]:
    """Hold the team sync lock for the ``with`` block.

    ``on_wait(holder)`` is called once when another host holds it; after ``timeout``
    seconds ``locked(holder)`` is raised; ``unreachable(reason)`` when the catalog's
    database does not answer."""
    acquired = threading.Event()
    release = threading.Event()
    box: dict[str, Exception] = {}

    async def hold() -> None:
        import asyncpg  # type: ignore[import-untyped]

        try:
            con = await asyncpg.connect(
                **connect_kwargs(conninfo),
                timeout=10,
                server_settings={"application_name": me()[:63]},
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            box["error"] = unreachable(text)
            acquired.set()
            return
        try:
            deadline = time.monotonic() + timeout
            told = False
            while not await con.fetchval("SELECT pg_try_advisory_lock($1, $2)", *KEYS):
                holder = await con.fetchval(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                    " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
                    " AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2 LIMIT 1",
                    *KEYS,
                )
                holder = holder or "another host"
                if time.monotonic() >= deadline:
                    box["error"] = locked(holder)
                    acquired.set()
                    return
                if not told:
                    on_wait(holder)
                    told = True
                await asyncio.sleep(_POLL)
            acquired.set()
            while not release.is_set():
                await asyncio.sleep(0.05)
            await con.fetchval("SELECT pg_advisory_unlock($1, $2)", *KEYS)
        finally:
            await con.close(timeout=10)

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:  # never leave the caller waiting
            box.setdefault("error", unreachable(f"{type(exc).__name__}: {exc}"))
        finally:
            acquired.set()

    thread = threading.Thread(target=run, name="wsjobs-team-lock")
    thread.daemon = True
    thread.start()
    acquired.wait()
    if "error" in box:
        thread.join(30)
        raise box["error"]
    try:
        yield
    finally:
        release.set()
        thread.join(30)
