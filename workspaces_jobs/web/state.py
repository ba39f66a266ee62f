"""What the web server holds while it runs: the history, the background sync, flashes.

**The server shares the history.** It is a DuckLake (see :mod:`reporting.store`): the
server keeps one connection open for its pages while its background sync
(:func:`reporting.sync.sync_history` every few seconds, in a thread) commits snapshots,
and other processes (``wsjobs list``, ``wsjobs sync``, SQL sessions) read and sync the
same history meanwhile; only two syncs wait for each other (the sync lock).

Page handlers share the connection through :meth:`WebState.db`, which hands out a
cursor under a lock: DuckDB connections are not meant for concurrent use from threads.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from workspaces_jobs.reporting.store import history_path, open_store, snapshot, stale_catalog

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between background syncs.
DEFAULT_SYNC_EVERY = 5.0
#: Flash messages kept for redirects not yet followed.
MAX_FLASHES = 200


@dataclass(frozen=True)
class SyncStatus:
    """The last sync as the page header shows it."""

    at: datetime | None = None
    ok: bool = True
    added: int = 0
    updated: int = 0
    error: str | None = None
    running: bool = False
    #: Who keeps the history current when this server does not (the companion's name).
    by: str | None = None


#: The managed server's companion that syncs the history (``server.COMPANIONS``).
COMPANION_NAME = "history-sync"


def companion_keeps(path: Path) -> bool:
    """Whether the managed server's history-sync companion is running and writes the
    history at ``path`` (the configured one): then the web view's own loop stands down,
    so one process, not two taking turns on the sync lock, keeps the history current.
    Refresh and the actions' "sync now" still sync at once (they wait for the lock)."""
    from workspaces_jobs import server

    try:
        info = server.read_state()
        same = history_path(None) == path
    except Exception:  # a damaged server.json or settings: sync ourselves
        return False
    return same and info is not None and COMPANION_NAME in info.companions


class Syncer:
    """Runs one sync at a time: every ``every`` seconds in a thread, or now on demand."""

    def __init__(self, path: Path, every: float) -> None:
        self.path = path
        self.every = every
        self.status = SyncStatus()
        self._run_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> SyncStatus:
        """Sync now (waits for a sync already running, then runs its own)."""
        from workspaces_jobs.reporting.sync import sync_history

        with self._run_lock:
            self.status = SyncStatus(at=self.status.at, running=True)
            try:
                result = sync_history(self.path, lock_timeout=10.0, on_wait=log.info)
            except Exception as exc:  # the API may be down: say so, try again later
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                log.warning("history sync failed: %s", message)
                self.status = SyncStatus(at=datetime.now(UTC), ok=False, error=message)
            else:
                self.status = SyncStatus(
                    at=datetime.now(UTC), added=result.jobs_added, updated=result.jobs_updated
                )
            return self.status

    def _loop(self) -> None:
        while not self._stop.is_set():
            if companion_keeps(self.path):
                self.status = SyncStatus(at=self.status.at, by=COMPANION_NAME)
            else:
                self.run_once()
            self._stop.wait(self.every)

    def start(self) -> None:
        if self.every <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="wsjobs-ui-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class Flashes:
    """One-shot messages carried across a POST → redirect → GET by a random key."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, kind: str, text: str) -> str:
        key = secrets.token_urlsafe(9)
        with self._lock:
            self._items[key] = (kind, text)
            while len(self._items) > MAX_FLASHES:
                self._items.popitem(last=False)
        return key

    def pop(self, key: str | None) -> tuple[str, str] | None:
        if not key:
            return None
        with self._lock:
            return self._items.pop(key, None)


class WebState:
    """The open history file, its lock, the syncer, the CSRF token and the flashes."""

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        sync_every: float = DEFAULT_SYNC_EVERY,
        lock_timeout: float | None = None,
    ) -> None:
        self.path = history_path(path)
        self.csrf_token = secrets.token_urlsafe(32)
        self.flashes = Flashes()
        self.syncer = Syncer(self.path, sync_every)
        self._db_lock = threading.RLock()
        self._lock_timeout = lock_timeout
        self._store = open_store(self.path, timeout=lock_timeout)
        self.con: duckdb.DuckDBPyConnection = self._store.__enter__()
        # The background sync opens the same lake in this process, so it shares this DuckDB
        # instance, and its `SET threads = 1` (reporting/sync.py) joins the instance's
        # worker threads while a page's query may be running on them: the two hung for good
        # (seen in Chromium tests: the list waiting in read_view, the sync in SET threads).
        # At one thread from the start that SET changes nothing and joins nothing.
        self.con.execute("SET threads = 1")
        self.started = time.time()

    @contextmanager
    def db(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The server's connection, for one page's queries at a time."""
        with self._db_lock:
            yield self.con

    @contextmanager
    def snapshot(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The server's connection as one read transaction, for a page that only reads:
        its statements see one snapshot and the lake's catalog is read once per page
        instead of once per statement (see :func:`reporting.store.snapshot`)."""
        with self._db_lock, snapshot(self.con) as con:
            yield con

    def reopen(self) -> None:
        """Open the history afresh: a new DuckDB instance reads the lake's catalog anew."""
        with self._db_lock:
            self._store.__exit__(None, None, None)
            self._store = open_store(self.path, timeout=self._lock_timeout)
            self.con = self._store.__enter__()

    def retried(self, page: Callable[..., T], *args: Any) -> T:
        """``page(self, *args)``, run once more on a reopened history when another
        process's maintenance left this long-lived connection a stale catalog (see
        :func:`reporting.store.stale_catalog`; it happens once per schema change)."""
        try:
            return page(self, *args)
        except duckdb.Error as exc:
            if not stale_catalog(exc):
                raise
            log.info("the history's catalog changed under the web view: reopening it")
            self.reopen()
            return page(self, *args)

    def close(self) -> None:
        self.syncer.stop()
        with self._db_lock:
            self._store.__exit__(None, None, None)

    def __enter__(self) -> WebState:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
