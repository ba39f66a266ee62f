"""The DuckDB history file: open, create, migrate, and wait politely for a lock.

Public surface (used by the sync, ``wsjobs list`` and the reports)::

    from workspaces_jobs.reporting.store import open_store

    with open_store() as con:                  # read-write: creates and migrates the file
        con.cursor().execute("SELECT count(*) FROM jobs").fetchone()
    with open_store(read_only=True) as con:    # readers; fails clearly if there is no file yet
        ...

``open_store(path=None, *, read_only=False, timeout=None, on_wait=None)`` is a context
manager yielding a ``duckdb.DuckDBPyConnection`` and closing it on exit. ``path`` defaults
to ``WSJOBS_HISTORY`` (``$WSJOBS_HOME/history.duckdb``). Use one cursor per result
(``con.cursor()``): DuckDB 2.0 silently cuts an open result when the same connection runs
another statement.

Why the pieces are here:

* **Schema** lives in ``reporting/sql/NNN_name.sql``, applied in number order on every
  read-write open and recorded in ``schema_version``. Adding a table or view is adding the
  next numbered file; nothing else changes. A file is applied in one transaction.
* **Compatibility**: files are created with ``storage_compatibility_version = v1.5.0``
  so the DuckDB 1.5 CLI users have can open what DuckDB 2.0 writes.
* **Locking**: DuckDB lets one process write a file and refuses every other open at once
  (``Could not set lock on file``, naming the holder's program and PID). Commands retry for
  ``WSJOBS_LOCK_TIMEOUT`` seconds (``on_wait`` is told once, e.g. to print "waiting"), then
  raise :class:`StoreLocked` whose message is one line naming the holder.
"""

from __future__ import annotations

import errno
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

from workspaces_jobs.errors import (
    EXIT_BAD_INPUT,
    EXIT_HISTORY_CORRUPT,
    EXIT_HISTORY_LOCKED,
    HistoryCorrupt,
    HistoryLocked,
    WriteFailed,
    WsJobsError,
)
from workspaces_jobs.settings import get_settings

#: Written into every new file so DuckDB 1.5 can read it (2.0's default format cannot).
STORAGE_COMPATIBILITY = "v1.5.0"

_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_HOLDER_RE = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
_RETRY_EVERY = 0.1


class StoreError(WsJobsError, RuntimeError):
    """A history-file problem a user can fix; the message is one line saying how."""

    exit_code = EXIT_BAD_INPUT


class StoreLocked(StoreError, HistoryLocked):
    """Another process held the file for longer than the lock timeout."""

    exit_code = EXIT_HISTORY_LOCKED


class StoreCorrupt(StoreError, HistoryCorrupt):
    """The file is damaged or not a history (truncated, checksum failure, another format)."""

    exit_code = EXIT_HISTORY_CORRUPT


#: DuckDB's words for a damaged or foreign file (``duckdb.IOException`` / ``duckdb.Error``).
_DAMAGE_MARKERS = (
    "not a valid DuckDB database file",
    "Could not read enough bytes",
    "Corrupt database file",
    "does not match stored checksum",
    "database file with version number",
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def history_path(path: Path | str | None = None) -> Path:
    return Path(path) if path is not None else get_settings().history_path


def migrations() -> list[Migration]:
    """The packaged migrations in version order (``reporting/sql/NNN_name.sql``)."""
    found: dict[int, Migration] = {}
    for entry in resources.files("workspaces_jobs.reporting").joinpath("sql").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise StoreError(
                f"two migrations numbered {version:03d} ({found[version].name}, {m.group(2)}):"
                " renumber one"
            )
        found[version] = Migration(version, m.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The newest migration applied to the file; 0 for a new file.

    (Existence is checked first: a missing table would make DuckDB's Python client look
    for a Python variable of that name to scan instead.)"""
    cur = con.cursor()
    exists = cur.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version'"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = cur.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration newer than the file's version; return the versions applied."""
    current = schema_version(con)
    pending = [m for m in migrations() if m.version > current]
    if not pending:  # the usual case: two cheap queries per open
        return []
    cur = con.cursor()
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied TIMESTAMPTZ NOT NULL)"
    )
    applied = []
    for mig in pending:
        cur.execute("BEGIN TRANSACTION")
        try:
            cur.execute(mig.sql)
            cur.execute(
                "INSERT INTO schema_version VALUES ($v, $n, now())",
                {"v": mig.version, "n": mig.name},
            )
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        applied.append(mig.version)
    return applied


def lock_holder(error: BaseException) -> str | None:
    """``program (PID n)`` from DuckDB's lock error, or None if it is not a lock error."""
    text = str(error)
    if "Could not set lock" not in text:
        return None
    m = _HOLDER_RE.search(text)
    return f"{Path(m['program']).name} (PID {m['pid']})" if m else "another process"


def corruption(error: BaseException) -> str | None:
    """DuckDB's reason when ``error`` says the file is damaged or not a history, else None."""
    text = str(error)
    if not any(marker in text for marker in _DAMAGE_MARKERS):
        return None
    first = text.splitlines()[0] if text.strip() else type(error).__name__
    return first.removeprefix("IO Error: ").strip()


def corrupt_error(path: Path, error: BaseException) -> StoreCorrupt | None:
    """:class:`StoreCorrupt` saying what to do, when ``error`` is a damaged-file error."""
    damage = corruption(error)
    if damage is None:
        return None
    return StoreCorrupt(
        f"history file {path} is damaged ({damage}): move it aside"
        f" (mv {path} {path}.damaged) and run `wsjobs sync --full` to rebuild it from the"
        " Prefect API (saved filters and view settings start afresh)"
    )


def disk_full_error(path: Path, error: BaseException) -> WriteFailed | None:
    """:class:`WriteFailed` naming ``ENOSPC`` when ``error`` or anything in its chain is a
    full disk. (A failed ``COMMIT`` makes the sync's ``ROLLBACK`` fail too, with "cannot
    rollback": the disk-full error is that one's context.)"""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        full = isinstance(current, OSError) and current.errno == errno.ENOSPC
        if full or "No space left on device" in text or '"errno":"28"' in text:
            return WriteFailed(
                f"cannot write history file {path}: No space left on device (ENOSPC); what"
                " the last finished sync wrote is kept: free some space and run the command"
                " again"
            )
        current = current.__cause__ or current.__context__
    return None


def known_error(path: Path, error: BaseException) -> WsJobsError | None:
    """A damaged file or a full disk as the product's error, else None."""
    return corrupt_error(path, error) or disk_full_error(path, error)


def say_waiting(message: str) -> None:
    """The default ``on_wait``: one line on stderr."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def connect(
    path: Path,
    *,
    read_only: bool = False,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the file, retrying while another process holds its lock (see module doc)."""
    timeout = get_settings().lock_timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    told = False
    config: dict[str, str | bool | int | float | list[str]] = (
        {} if read_only else {"storage_compatibility_version": STORAGE_COMPATIBILITY}
    )
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.Error as exc:
            known = known_error(path, exc)
            if known is not None:
                raise known from exc
            holder = lock_holder(exc)
            if holder is None:
                first = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise StoreError(f"cannot open history file {path}: {first}") from exc
            if time.monotonic() >= deadline:
                raise StoreLocked(
                    f"history file {path} is locked by {holder} (waited {timeout:g} s):"
                    " try again when it has finished, or raise WSJOBS_LOCK_TIMEOUT"
                ) from None
            if not told:
                (on_wait or say_waiting)(
                    f"history file {path} is in use by {holder}; waiting up to {timeout:g} s…"
                )
                told = True
            time.sleep(_RETRY_EVERY)


@contextmanager
def open_store(
    path: Path | str | None = None,
    *,
    read_only: bool = False,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The history file as a connection, created and migrated as needed; closed on exit.

    Read-only opens need an existing file (else :class:`StoreError` says to run
    ``wsjobs sync``); if the file's schema is older than this package's, it is migrated
    first with a short read-write open.
    """
    file = history_path(path)
    if read_only:
        if not file.exists():
            raise StoreError(
                f"no history file at {file} yet: run `wsjobs sync` first"
                " (or fix --history / WSJOBS_HISTORY)"
            )
        con = connect(file, read_only=True, timeout=timeout, on_wait=on_wait)
        if schema_version(con) < latest_version():
            con.close()
            with open_store(file, timeout=timeout, on_wait=on_wait):
                pass
            con = connect(file, read_only=True, timeout=timeout, on_wait=on_wait)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        con = connect(file, timeout=timeout, on_wait=on_wait)
        try:
            migrate(con)
        except Exception as exc:
            con.close()
            known = known_error(file, exc)
            if known is not None:
                raise known from exc
            raise
    try:
        yield con
    except duckdb.Error as exc:  # a checksum failure shows only when a block is read
        known = known_error(file, exc)
        if known is not None:
            raise known from exc
        raise
    finally:
        con.close()


def latest_version() -> int:
    found = migrations()
    return found[-1].version if found else 0
