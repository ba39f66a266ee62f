"""The job history as a DuckLake: open, create, migrate, and keep one sync writing at a time.

Public surface (used by the sync, ``wsjobs list``, the web view and the reports)::

    from workspaces_jobs.reporting.store import open_store

    with open_store() as con:                  # read-write: creates and migrates the history
        con.cursor().execute("SELECT count(*) FROM jobs").fetchone()
    with open_store(read_only=True) as con:    # readers; fails clearly if there is none yet
        ...

``open_store(path=None, *, read_only=False, timeout=None, on_wait=None)`` is a context
manager yielding a ``duckdb.DuckDBPyConnection`` whose main database is the history (so
``FROM jobs`` works in every cursor) and closing it on exit. ``path`` defaults to
``WSJOBS_HISTORY`` (``$WSJOBS_HOME/history.ducklake``), the history's *catalog*: an
SQLite file, its Parquet data files in ``<catalog>.files/`` beside it.
``WSJOBS_HISTORY_CATALOG=postgres:<libpq conninfo>`` (with
``WSJOBS_HISTORY_DATA`` for a shared data folder) keeps a team's catalog in PostgreSQL
instead; ``path`` may also be such a ``postgres:`` string. Use one cursor per result.

Why a DuckLake rather than one DuckDB file (issue 17): DuckDB lets one process write a
file while no other process has it open, so the web view, audits and the sync locked each
other out. In a DuckLake every commit is a *snapshot* recorded in the catalog database;
readers and the writer run side by side (no lock between them), each reader transaction
sees one snapshot, and ``FROM jobs AT (VERSION => n)`` / ``AT (TIMESTAMP => t)`` reads the
past (time travel).

Why the pieces are here:

* **Extensions** come from the ``duckdb-extension-ducklake``/``-sqlite``/``-postgres``
  wheels (built for DuckDB 1.5.5, which is why ``duckdb`` is pinned to it): on first use
  they are ``INSTALL``-ed from the wheel's file into DuckDB's extension folder, then
  ``LOAD``-ed; nothing is downloaded and auto-install from the network is off.
* **SQLite catalogs run in WAL mode** (set when the catalog is created): measured, in the
  default rollback-journal mode a reader holding a transaction made the writer's commit
  fail with "database is locked"; in WAL mode one writer, two readers and a reader
  holding a transaction ran side by side with zero errors.
* **Schema** lives in ``reporting/sql/NNN_name.sql``, applied in number order and recorded
  in ``schema_version``, each file in one transaction. DuckLake has no PRIMARY KEY, UNIQUE
  or index: migrations use CREATE TABLE without constraints, ALTER TABLE ADD COLUMN and
  CREATE OR REPLACE VIEW, and keys are kept by the writers (:mod:`reporting.rows`).
* **One sync at a time**: :func:`writer_lock` is an OS file lock (next to an SQLite
  catalog, in ``WSJOBS_HOME`` for PostgreSQL) held by a sync pass or a migration.
  Another sync waits ``WSJOBS_LOCK_TIMEOUT`` seconds (``on_wait`` is told once), then
  :class:`StoreLocked` says who holds it. Readers never take it.
* **Bounded files and snapshots**: :func:`maintain` (run by the sync, at most every
  ``MAINTAIN_EVERY``) flushes inlined rows into Parquet, merges small files, expires
  snapshots older than ``WSJOBS_HISTORY_KEEP_DAYS`` and deletes the files they alone used.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, cast

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

#: The name the history is attached under (and made the default catalog).
ALIAS = "history"
#: Commits of at most this many rows per table stay in the catalog database (no Parquet
#: file): a sync of a few jobs creates no file at all until :func:`maintain` flushes.
INLINE_ROWS = 1000
#: Files smaller than this are merged by :func:`maintain`.
TARGET_FILE_SIZE = "64MB"
#: How often the sync runs :func:`maintain` (and a file that a dropped snapshot used is
#: deleted this long after, so a reader still on that snapshot finishes its query).
MAINTAIN_EVERY = timedelta(minutes=10)
DELETE_AFTER = timedelta(hours=1)

_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_RETRY_EVERY = 0.1
_HOLDER_RE = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
_DUCKDB_MAGIC = b"DUCK"
_EXTENSIONS = {"sqlite": "duckdb_extension_sqlite", "ducklake": "duckdb_extension_ducklake",
               "postgres": "duckdb_extension_postgres"}  # fmt: skip
_HELD: set[tuple[str, int]] = set()
_LOADED_NAMES = {"sqlite": "sqlite_scanner", "ducklake": "ducklake", "postgres": "postgres_scanner"}


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
    # the SQLite catalog of the DuckLake history
    "file is not a database",
    "database disk image is malformed",
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class Location:
    """Where a history lives: its catalog database and its data folder."""

    kind: str  # "sqlite" or "postgres"
    catalog: str  # a file path, or a libpq connection string
    data_path: str
    lock_file: Path

    @property
    def display(self) -> str:
        """How messages name it (never a PostgreSQL password)."""
        if self.kind == "sqlite":
            return self.catalog
        return "postgres:" + re.sub(r"password=\S+", "password=***", self.catalog)

    @property
    def attach_target(self) -> str:
        return f"ducklake:{self.kind}:{self.catalog}"

    def exists(self) -> bool:
        if self.kind == "sqlite":
            return Path(self.catalog).exists()
        return True  # a PostgreSQL catalog is created by its first read-write open


def history_path(path: Path | str | None = None) -> Path:
    """The configured history's catalog file (for a PostgreSQL catalog: its lock file)."""
    loc = locate(path)
    return Path(loc.catalog) if loc.kind == "sqlite" else loc.lock_file


def locate(path: Path | str | None = None) -> Location:
    """Resolve ``path`` / the settings into a :class:`Location`."""
    settings = get_settings()
    spec: str
    if path is not None:
        spec = str(path)
    elif settings.history_catalog:
        spec = settings.history_catalog
    else:
        spec = str(settings.history_path)
    if spec.startswith("postgres:"):
        data = settings.history_data
        if not data:
            raise StoreError(
                "a PostgreSQL history catalog needs a data folder: set WSJOBS_HISTORY_DATA to a"
                " path every host reads (e.g. a shared mount)"
            )
        return Location(
            "postgres",
            spec.removeprefix("postgres:"),
            _folder(str(data)),
            settings.home / "history-postgres.lock",
        )
    file = Path(spec).expanduser().absolute()
    data = str(settings.history_data) if settings.history_data else f"{file}.files"
    return Location("sqlite", str(file), _folder(data), Path(f"{file}.lock"))


def _folder(path: str) -> str:
    return path if path.endswith("/") else path + "/"


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


def latest_version() -> int:
    found = migrations()
    return found[-1].version if found else 0


def applied_versions(con: duckdb.DuckDBPyConnection) -> set[int]:
    """The migrations applied to the history; empty for a new one.

    (Existence is checked first: a missing table would make DuckDB's Python client look
    for a Python variable of that name to scan instead.)"""
    cur = con.cursor()
    exists = cur.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
        " AND schema_name = 'main' AND table_name = 'schema_version'"
    ).fetchone()
    if not exists or not exists[0]:
        return set()
    return {int(r[0]) for r in cur.execute("SELECT version FROM schema_version").fetchall()}


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The newest migration applied to the history; 0 for a new one."""
    return max(applied_versions(con), default=0)


def pending_migrations(con: duckdb.DuckDBPyConnection) -> list[Migration]:
    """The packaged migrations this history has not applied, in version order.

    By set, not by "newer than the highest": migration numbers are reserved per issue and
    land in any order, so a history migrated to 011 before 008 landed must still get 008."""
    applied = applied_versions(con)
    return [m for m in migrations() if m.version not in applied]


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration the history lacks (:func:`pending_migrations`); return their versions.

    Each file runs in one transaction with its ``schema_version`` row: all or nothing. A new
    history gets every migration in one transaction (all or nothing, like one file):
    measured on a new lake, 0.2 s of CPU against 1.3 s file by file (each commit of a
    DuckLake writes a schema version and its catalog rows), and no flush after it: with
    one schema version there are no superseded inlined-data tables, and no reader can
    have cached any (the history did not exist)."""
    applied = applied_versions(con)
    pending = [m for m in migrations() if m.version not in applied]
    if not pending:  # the usual case: two cheap queries per open
        return []
    cur = con.cursor()
    if not applied:
        _apply(cur, pending)
        return [m.version for m in pending]
    for mig in pending:
        _apply(cur, [mig])
    if is_lake(con):
        # A schema change leaves each table's inlined rows in a table per schema version;
        # the next flush drops the superseded ones, and a reader that cached their names
        # (a web view, an SQL session) then fails on every query (checked: "Table with
        # name ducklake_inlined_data_11_2 does not exist"). Flushing now, in the process
        # that changed the schema, drops them before readers of the new schema start.
        cur.execute(f"CALL ducklake_flush_inlined_data({_literal(lake_name(con))})")
    return [m.version for m in pending]


def _apply(cur: duckdb.DuckDBPyConnection, migs: list[Migration]) -> None:
    """``migs`` and their ``schema_version`` rows in one transaction: all or nothing."""
    cur.execute("BEGIN TRANSACTION")
    try:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER NOT NULL, name VARCHAR NOT NULL, applied TIMESTAMPTZ NOT NULL)"
        )
        for mig in migs:
            cur.execute(mig.sql)
            cur.execute(
                "INSERT INTO schema_version VALUES ($v, $n, now())",
                {"v": mig.version, "n": mig.name},
            )
        cur.execute("COMMIT")
    except Exception:
        cur.execute("ROLLBACK")
        raise


def is_lake(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con``'s main database is a DuckLake (tests also migrate plain DuckDB)."""
    row = (
        con.cursor()
        .execute("SELECT type FROM duckdb_databases() WHERE database_name = current_database()")
        .fetchone()
    )
    return bool(row and row[0] == "ducklake")


def stale_catalog(error: BaseException) -> bool:
    """Whether ``error`` is a long-lived reader's stale view of the lake's catalog: another
    process's maintenance dropped an inlined-data table this DuckDB instance had cached.
    Only a new DuckDB instance (close every connection, open again) reads it afresh."""
    text = str(error)
    return "ducklake_inlined_data" in text and "does not exist" in text


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
        full = full or "database or disk is full" in text  # the SQLite catalog's words
        full = full or ("disk I/O error" in text and _no_space(path))  # its WAL files
        if full or "No space left on device" in text or '"errno":"28"' in text:
            return WriteFailed(
                f"cannot write history file {path}: No space left on device (ENOSPC); what"
                " the last finished sync wrote is kept: free some space and run the command"
                " again"
            )
        current = current.__cause__ or current.__context__
    return None


def _no_space(path: Path) -> bool:
    """Whether the file system holding ``path`` has no free block left."""
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def known_error(path: Path, error: BaseException) -> WsJobsError | None:
    """A damaged file or a full disk as the product's error, else None."""
    return corrupt_error(path, error) or disk_full_error(path, error)


def say_waiting(message: str) -> None:
    """The default ``on_wait``: one line on stderr."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# -- extensions -------------------------------------------------------------------------


def extension_file(name: str) -> Path:
    """The ``.duckdb_extension`` inside the installed ``duckdb-extension-<name>`` wheel."""
    import importlib

    module = importlib.import_module(_EXTENSIONS[name])
    folder = Path(str(module.__file__)).parent / "extensions"
    found = sorted(folder.glob(f"v{duckdb.__version__}/*.duckdb_extension"))
    if not found:
        raise StoreError(
            f"the {name} extension for DuckDB {duckdb.__version__} is missing from"
            f" {folder}: reinstall workspaces-jobs (it pins duckdb to the extensions' version)"
        )
    return found[0]


# -- opening --------------------------------------------------------------------------


def connect(loc: Location, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose database *is* the history (so every cursor sees it).

    The lake is opened as DuckDB's main database (``duckdb.connect('ducklake:...')``)
    rather than ATTACHed to an in-memory one: ``USE`` is per connection and
    ``con.cursor()`` would not inherit it. A new catalog is first created with an
    ATTACH that stores its data path in the catalog itself."""
    install_extensions((loc.kind, "ducklake"))
    try:
        new = loc.kind == "sqlite" and _check_sqlite_catalog(Path(loc.catalog), not read_only)
        if new or (loc.kind == "postgres" and not read_only):
            _create(loc)
        try:
            con = duckdb.connect(loc.attach_target, read_only=read_only, config=_CONFIG)
        except duckdb.ConnectionException as exc:
            if not read_only or "different configuration" not in str(exc):
                raise
            # This process has the history open read-write already (the web view and its
            # pages): share that instance.
            con = duckdb.connect(loc.attach_target, config=_CONFIG)
        con.execute("SET enable_progress_bar = false")  # no bars in pipes and children
        if not read_only:
            # Settings, not catalog options: set_option crashed DuckDB 1.5.5 on a new
            # PostgreSQL catalog (segfault, checked); the settings do the same per writer.
            con.execute(f"SET GLOBAL ducklake_default_data_inlining_row_limit = {INLINE_ROWS}")
            con.execute(f"SET GLOBAL ducklake_target_file_size = '{TARGET_FILE_SIZE}'")
        return con
    except duckdb.Error as exc:
        known = known_error(Path(loc.catalog), exc) if loc.kind == "sqlite" else None
        if known is not None:
            raise known from exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise StoreError(f"cannot open history {loc.display}: {first}") from exc


_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": True,
    # DuckDB checks an extension's signature on every LOAD by hashing the whole file:
    # the ducklake and sqlite extensions are ~70 MB, measured 0.7-1.3 s per process
    # (45-270 ms without). The files are the ones pip installed from the
    # duckdb-extension-* wheels (see install_extensions): the same trust as the duckdb
    # module itself. Nothing is ever downloaded (autoinstall is off).
    "allow_unsigned_extensions": True,
}


def install_extensions(names: tuple[str, ...]) -> None:
    """Install the extensions from their wheels into DuckDB's extension folder, once.

    Skipped without opening DuckDB when the files are already there (every command but
    the first after an install): the check is a glob, not a connection."""
    if all(n in _INSTALLED for n in names):
        return
    folder = Path.home() / ".duckdb" / "extensions" / f"v{duckdb.__version__}"
    if all(any(folder.glob(f"*/{_LOADED_NAMES[n]}.duckdb_extension")) for n in names):
        _INSTALLED.update(names)
        return
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
    try:
        con.execute("SET enable_progress_bar = false")
        have = {
            r[0]
            for r in con.execute(
                "SELECT extension_name FROM duckdb_extensions() WHERE installed"
            ).fetchall()
        }
        for name in names:
            if name not in have and _LOADED_NAMES[name] not in have:
                con.execute("INSTALL " + _literal(str(extension_file(name))))
            _INSTALLED.add(name)
    finally:
        con.close()


_INSTALLED: set[str] = set()


def _create(loc: Location) -> None:
    con = duckdb.connect(":memory:", config=_CONFIG)
    try:
        con.execute("SET enable_progress_bar = false")  # it would print on stdout
        con.execute(
            f"ATTACH {_literal(loc.attach_target)} AS {ALIAS} (DATA_PATH {_literal(loc.data_path)})"
        )
    finally:
        con.close()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _check_sqlite_catalog(file: Path, create: bool) -> bool:
    """Create the catalog file in WAL mode (see module doc), or refuse an old DuckDB file;
    True if it was created now.

    Python's own sqlite3 touches the file only here, before DuckDB opens it, and closes it
    at once: two SQLite libraries with the same file open in one process corrupt it (POSIX
    locks are per process)."""
    if file.exists():
        with file.open("rb") as fh:
            head = fh.read(16)
        if head[8:12] == _DUCKDB_MAGIC:
            raise StoreError(
                f"{file} is a history file of an older workspaces-jobs (one DuckDB file):"
                f" run `wsjobs history migrate --from {file} --history NEW.ducklake`"
            )
        return False
    if not create:
        return False
    file.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(file)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
    return True


@contextmanager
def open_store(
    path: Path | str | None = None,
    *,
    read_only: bool = False,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The history as a connection, created and migrated as needed; closed on exit.

    Read-only opens need an existing history (else :class:`StoreError` says to run
    ``wsjobs sync``) and never wait; if the schema is older than this package's, it is
    migrated first (under :func:`writer_lock`, which ``timeout``/``on_wait`` are for).
    """
    loc = locate(path)
    if read_only:
        if not loc.exists():
            raise StoreError(
                f"no history file at {loc.display} yet: run `wsjobs sync` first"
                " (or fix --history / WSJOBS_HISTORY)"
            )
        con = connect(loc, read_only=True)
        try:
            stale = bool(pending_migrations(con))
        except BaseException:
            con.close()
            raise
        if stale:
            con.close()
            with open_store(path, timeout=timeout, on_wait=on_wait):
                pass
            con = connect(loc, read_only=True)
    else:
        con = connect(loc)
        try:
            if pending_migrations(con):
                with writer_lock(loc, timeout=timeout, on_wait=on_wait):
                    migrate(con)
        except BaseException:
            con.close()
            raise
    try:
        yield con
    except duckdb.Error as exc:  # a full disk shows only when a commit writes
        known = known_error(Path(loc.catalog), exc) if loc.kind == "sqlite" else None
        if known is not None:
            raise known from exc
        raise
    finally:
        con.close()


# -- one snapshot per read ------------------------------------------------------------------


class _Pinned:
    """A cursor in a read transaction whose ``cursor()`` is itself, so code written as
    ``con.cursor().execute(...)`` runs every statement in that one transaction."""

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self._cur = cur

    def cursor(self) -> _Pinned:
        return self

    def execute(self, *args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        return self._cur.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


@contextmanager
def snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``con`` as one read transaction: every statement sees the same snapshot.

    Why: in a DuckLake each transaction first reads the catalog (the snapshot, the tables,
    their files and statistics: ~40 SQLite queries), so a list page of ~10 statements
    paid that ~10 times; in one transaction it is paid once (measured: ~45 -> ~17 ms per
    small statement), and the page's count and rows cannot disagree. For reads only:
    results must be fetched before the next statement (the statements share a cursor),
    and the transaction is rolled back at the end."""
    cur = con.cursor()
    cur.execute("BEGIN TRANSACTION")
    try:
        yield cast(duckdb.DuckDBPyConnection, _Pinned(cur))
    finally:
        try:
            cur.execute("ROLLBACK")
        finally:
            cur.close()


# -- one writer ---------------------------------------------------------------------------


@contextmanager
def writer_lock(
    loc: Location | Path | str | None = None,
    *,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the history's sync lock (an OS lock, released if the process dies)."""
    if not isinstance(loc, Location):
        loc = locate(loc)
    key = (str(loc.lock_file), threading.get_ident())
    if key in _HELD:  # this thread holds it already (a sync pass that migrates)
        yield
        return
    timeout = get_settings().lock_timeout if timeout is None else timeout
    loc.lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(loc.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd)
                if time.monotonic() >= deadline:
                    raise StoreLocked(
                        f"history {loc.display} is being written by {holder} (waited"
                        f" {timeout:g} s): try again when it has finished, or raise"
                        " WSJOBS_LOCK_TIMEOUT"
                    ) from None
                if not told:
                    (on_wait or say_waiting)(
                        f"history {loc.display} is being written by {holder};"
                        f" waiting up to {timeout:g} s…"
                    )
                    told = True
                time.sleep(_RETRY_EVERY)
        program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] not in ("", "-c") else ""
        program = program or Path(sys.executable).name
        try:  # who holds it, for the other's message; best effort (a full disk says so later)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{program} (PID {os.getpid()})".encode(), 0)
        except OSError:
            pass
        _HELD.add(key)
        try:
            with _team_lock(loc, deadline, on_wait):
                yield
        finally:
            _HELD.discard(key)
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _team_lock(
    loc: Location, deadline: float, on_wait: Callable[[str], None] | None
) -> Iterator[None]:
    """For a PostgreSQL catalog, the lock every host sees (:mod:`reporting.teamlock`):
    the file lock above only orders the syncs of this host."""
    if loc.kind != "postgres":
        yield
        return
    from workspaces_jobs.reporting.teamlock import advisory_lock

    timeout = max(0.0, deadline - time.monotonic())
    with advisory_lock(
        loc.catalog,
        timeout=timeout,
        on_wait=lambda holder: (on_wait or say_waiting)(
            f"history {loc.display} is being written by {holder}; waiting up to {timeout:g} s…"
        ),
        locked=lambda holder: StoreLocked(
            f"history {loc.display} is being written by {holder} (waited {timeout:g} s):"
            " try again when it has finished, or raise WSJOBS_LOCK_TIMEOUT"
        ),
        unreachable=lambda reason: StoreError(
            f"cannot take the sync lock in the history catalog {loc.display}: {reason}"
        ),
    ):
        yield


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


# -- maintenance --------------------------------------------------------------------------


def maintain(
    con: duckdb.DuckDBPyConnection, *, now: datetime | None = None, keep_days: float | None = None
) -> None:
    """Keep files and snapshots bounded: flush inlined rows to Parquet, merge small files,
    expire snapshots older than ``keep_days`` (``WSJOBS_HISTORY_KEEP_DAYS``) and delete
    the files no kept snapshot uses once they are ``DELETE_AFTER`` old."""
    now = now or datetime.now(UTC)
    keep = get_settings().history_keep_days if keep_days is None else keep_days
    cur = con.cursor()
    db = _literal(lake_name(con))
    cur.execute(f"CALL ducklake_flush_inlined_data({db})")
    # Rewrite every file that has deleted rows (an upsert deletes the old row): measured,
    # with the default threshold each maintenance left 2 files + 2 delete files more per
    # table pair (41 after 1,000 small syncs, growing); at 0 the history stays at 3.
    cur.execute(f"CALL ducklake_rewrite_data_files({db}, delete_threshold => 0.0)")
    cur.execute(f"CALL ducklake_merge_adjacent_files({db})")
    cur.execute(
        f"CALL ducklake_expire_snapshots({db}, older_than => $t)",
        {"t": now - timedelta(days=keep)},
    )
    cur.execute(
        f"CALL ducklake_cleanup_old_files({db}, older_than => $t)", {"t": now - DELETE_AFTER}
    )


def maintain_if_due(
    con: duckdb.DuckDBPyConnection,
    path: Path | str | None = None,
    *,
    every: timedelta = MAINTAIN_EVERY,
    now: datetime | None = None,
) -> bool:
    """Run :func:`maintain` if the last run (a stamp file beside the lock) is ``every``
    old; the caller holds :func:`writer_lock`. Returns whether it ran."""
    stamp = _stamp(path)
    moment = now or datetime.now(UTC)
    try:
        last = datetime.fromtimestamp(stamp.stat().st_mtime, UTC)
    except FileNotFoundError:
        last = None
    if last is not None and moment - last < every:
        return False
    maintain(con, now=moment)
    defer_maintenance(path, now=moment)
    return True


def defer_maintenance(path: Path | str | None = None, *, now: datetime | None = None) -> None:
    """Count the history as maintained at ``now``: the next :func:`maintain_if_due` runs
    ``every`` later (the sync, after a pass that filled an empty history)."""
    stamp = _stamp(path)
    moment = now or datetime.now(UTC)
    stamp.touch()
    os.utime(stamp, (moment.timestamp(), moment.timestamp()))


def _stamp(path: Path | str | None) -> Path:
    return Path(f"{locate(path).lock_file}.maintained")


def lake_name(con: duckdb.DuckDBPyConnection) -> str:
    """The history's database name in ``con`` (DuckDB names it after the catalog file)."""
    row = con.cursor().execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else ALIAS


def data_files(con: duckdb.DuckDBPyConnection) -> int:
    """How many data and delete files the history's current snapshot uses."""
    cur = con.cursor()
    tables = [
        r[0]
        for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
    ]
    total = 0
    for table in tables:
        row = cur.execute(
            "SELECT count(*) + count(delete_file) FROM ducklake_list_files("
            + _literal(lake_name(con))
            + ", $t)",
            {"t": table},
        ).fetchone()
        total += int(row[0]) if row else 0
    return total
