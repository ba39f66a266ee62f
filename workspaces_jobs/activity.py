"""Who did what: the activity log and the notes on jobs, both tables of the history.

Every action a person takes (run, cancel, kill, rerun, notify, a note, a schedule, a
filter or view change) calls :func:`record` from the shared function that does it
(``lifecycle.cancel_job``, ``schedules.create_schedule``, ``reporting.saved.save_filter``,
...), so the CLI, the web view and the JSON API all leave the same row. The one row no
person writes, the ``run`` of a job a schedule created, is written by the history sync
from the job's own facts (:func:`record_scheduled`), never by the worker. ``who`` is the
*verified* actor: the signed-in user (web), the token's user (API), the OS user (a CLI
without a login); a free-text ``--by``/``--owner`` is kept in ``detail``, never as ``who``.

How a row reaches the history. The history has one *sync* writer, but it is a DuckLake:
any process may commit a short transaction beside it (the catalog orders the commits;
DuckLake retries a commit that raced another). So :func:`record` opens the history
read-write, inserts one row and commits, on the actor's host: the managed local server's
history, or a team's PostgreSQL catalog every host reaches. A CLI that cannot reach the
history acts through the web server's JSON API (``wsjobs login``), which records on the
server's host. Measured (``benchmarks/activity.py``): one record costs one history open
(the extensions' LOAD) plus a commit, 0.08-0.18 s CPU in a fresh process, paid once per
human action; rows commit under the sync's host-local writer lock (two processes
committing side by side without it left one spinning at full CPU); the sync and the job's
own run (executor, steps, hooks) do no extra work at all. The alternative, Prefect events
pulled by the sync, would put a paged API read in every sync pass and make a row appear
only after the next pass (a cancel would not be in the Activity tab when the page reloads).

A failed write never undoes the action that was done (a job canceled stays canceled): it
is logged as a warning (the CLI prints a ``warning:`` line) and :func:`record` returns
False.

The actor and source default to the context: :func:`acting_as` sets them for a request
(the web view and the API), else the source is ``cli`` and the actor the OS user.
"""

from __future__ import annotations

import getpass
import logging
import time as _time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args

from workspaces_jobs.errors import BadInput

log = logging.getLogger(__name__)

Source = Literal["web", "cli", "api", "schedule"]
SOURCES: tuple[str, ...] = get_args(Source)
#: Longest note accepted (characters); a longer one is refused, not cut.
MAX_NOTE = 4000
#: Seconds a row waits for a sync pass that holds the history's writer lock.
LOCK_WAIT = 30.0
#: Commits that raced another writer are retried this many times.
_RETRIES = 5

_HISTORY: list[Path | str | None] = [None]
_SHARED: list[Callable[[], AbstractContextManager[Any]] | None] = [None]
_ACTOR: ContextVar[tuple[str | None, Source] | None] = ContextVar("wsjobs_actor", default=None)


@dataclass(frozen=True)
class Activity:
    time: datetime
    who: str
    action: str
    job_id: str | None
    schedule: str | None
    source: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"time": self.time.isoformat()}


@dataclass(frozen=True)
class Note:
    id: str
    job_id: str
    time: datetime
    author: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"time": self.time.isoformat()}


def local_user() -> str:
    """The OS user: the CLI's actor until it is logged in to a server."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's random uid)
        return "unknown"


@contextmanager
def acting_as(who: str | None, source: Source) -> Iterator[None]:
    """Within this block, actions default to ``who`` from ``source`` (a web/API request;
    ``who`` None: the source only, the actor comes from the call, e.g. its ``by``)."""
    token = _ACTOR.set((who, source))
    try:
        yield
    finally:
        _ACTOR.reset(token)


def use_history(
    path: Path | str | None, connection: Callable[[], AbstractContextManager[Any]] | None = None
) -> None:
    """Make ``path`` this process's history for activity and notes (``wsjobs ui --history``
    serves another history than the configured one); ``connection``: a context manager
    factory yielding the process's own open history connection, used instead of opening
    another one (the web view: one connection, under its lock, for pages and writes)."""
    _HISTORY[0] = path
    _SHARED[0] = connection


def history() -> Path | str | None:
    """The history this process records into (None: the configured one)."""
    return _HISTORY[0]


def context_who() -> str | None:
    """The actor an :func:`acting_as` block (a web or API request) set, if any."""
    ctx = _ACTOR.get()
    return ctx[0] if ctx else None


def actor(who: str | None = None, source: str | None = None) -> tuple[str, Source]:
    """``(who, source)``: the explicit values, else the context's, else (OS user, cli)."""
    ctx = _ACTOR.get()
    src = source or (ctx[1] if ctx else "cli")
    if src not in SOURCES:
        raise BadInput(f"unknown activity source {src!r}: use one of {', '.join(SOURCES)}")
    name = who or (ctx[0] if ctx else None) or local_user()
    return name, cast(Source, src)


def _now(at: datetime | None) -> datetime:
    return (at or datetime.now(UTC)).astimezone(UTC)


def _insert(sql: str, params: dict[str, Any], history: Path | str | None, con: Any = None) -> None:
    from workspaces_jobs.reporting.store import writer_lock

    history = history or _HISTORY[0]
    if con is not None:  # the caller's own write (saved filters): it knows its transaction
        _execute(con, sql, params)
        return
    # One commit at a time on this host: measured (benchmarks/activity.py), two processes
    # committing rows to the lake side by side left one spinning at full CPU for minutes;
    # the sync's file lock serialises them (a sync pass is waited for, up to LOCK_WAIT).
    with writer_lock(history, timeout=LOCK_WAIT, on_wait=lambda _m: None):
        with _writer(None, history) as c:
            _execute(c, sql, params)


@contextmanager
def _connection(con: Any, history: Path | str | None, *, read_only: bool) -> Iterator[Any]:
    """``con``, else the process's shared connection (the web view), else a new one."""
    if con is not None:
        yield con
        return
    shared = _SHARED[0]
    if shared is not None and history in (None, _HISTORY[0]):
        with shared() as own:
            yield own
        return
    from workspaces_jobs.reporting.store import open_store

    with open_store(history or _HISTORY[0], read_only=read_only) as opened:
        yield opened


def _writer(con: Any, history: Path | str | None) -> AbstractContextManager[Any]:
    return _connection(con, history, read_only=False)


def _execute(con: Any, sql: str, params: dict[str, Any]) -> None:
    import duckdb

    cur = con.cursor()
    for attempt in range(_RETRIES):
        try:
            cur.execute(sql, params)
            return
        except duckdb.TransactionException:  # another writer committed first
            if attempt == _RETRIES - 1:
                raise
            _time.sleep(0.05 * (attempt + 1))


def record(
    who: str,
    action: str,
    *,
    job_id: str | None = None,
    schedule: str | None = None,
    source: str,
    detail: str = "",
    at: datetime | None = None,
    history: Path | str | None = None,
    con: Any = None,
) -> bool:
    """Add one activity row; False (and a warning) if the history could not be written.

    ``con``: a read-write history connection the caller has open (saved filters, the web
    view), else the history is opened for this one commit."""
    if source not in SOURCES:
        raise BadInput(f"unknown activity source {source!r}: use one of {', '.join(SOURCES)}")
    params = {
        "t": _now(at),
        "who": who,
        "action": action,
        "job": job_id,
        "schedule": schedule,
        "source": source,
        "detail": detail,
    }
    try:
        _insert(
            "INSERT INTO activity (time, who, action, job_id, schedule, source, detail)"
            " VALUES ($t, $who, $action, $job, $schedule, $source, $detail)",
            params,
            history,
            con,
        )
    except Exception as exc:  # the action is done; losing its row must not undo it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning(
            "activity not recorded (%s %s by %s): %s", action, job_id or schedule or "", who, first
        )
        return False
    return True


def record_run(
    job_id: str,
    action: str,
    *,
    who: str | None = None,
    source: str | None = None,
    owner: str | None = None,
    schedule: str | None = None,
    detail: str = "",
) -> bool:
    """The ``run`` row of a job just submitted (``owner``: the declared owner, kept in
    ``detail`` when it is not the actor)."""
    who, source = actor(who, source)
    text = action + (f", {detail}" if detail else "")
    if owner and owner != who:
        text += f" (owner {owner})"
    return record(who, "run", job_id=job_id, schedule=schedule, source=source, detail=text)


def record_scheduled(cur: Any, job_ids: list[str]) -> None:
    """The ``run`` rows of the jobs among ``job_ids`` that a schedule created (source
    ``schedule``, who = the schedule's owner), in the caller's transaction: the sync calls
    it as it writes the jobs, so the row lands in the one history from the job's own facts
    (its ``schedule:`` tag), never in a file on the worker's host. Idempotent."""
    if not job_ids:
        return
    from workspaces_jobs.reporting.prune import sql_file

    cur.execute(sql_file("activity_scheduled_runs.sql"), {"ids": job_ids})


def check_note(text: str) -> str:
    """The note's text, trimmed; :class:`BadInput` if empty or too long."""
    text = (text or "").strip()
    if not text:
        raise BadInput("the note is empty: write what was found or why")
    if len(text) > MAX_NOTE:
        raise BadInput(f"the note has {len(text)} characters: keep it under {MAX_NOTE}")
    return text


def add_note(
    job_id: str,
    author: str,
    text: str,
    at: datetime | None = None,
    *,
    source: str | None = None,
    history: Path | str | None = None,
) -> Note:
    """Store a note on a job (and a ``note`` activity row); raise if it cannot be written:
    unlike an action's row, the note *is* the action."""
    text = check_note(text)
    if not author.strip():
        raise BadInput("a note needs an author")
    note = Note(uuid.uuid4().hex, job_id, _now(at), author, text)
    _insert(
        "INSERT INTO notes (id, job_id, time, author, text) VALUES ($id, $job, $t, $a, $x)",
        {"id": note.id, "job": job_id, "t": note.time, "a": author, "x": text},
        history,
    )
    _, src = actor(author, source)
    record(author, "note", job_id=job_id, source=src, detail=f"note {note.id[:8]}", at=at,
           history=history)  # fmt: skip
    return note


@contextmanager
def reading(con: Any = None, history: Path | str | None = None) -> Iterator[Any]:
    """A history connection to read: ``con``, the process's shared one, or a new read-only
    one (closed after)."""
    with _connection(con, history, read_only=True) as opened:
        yield opened


def job_activity(
    job_id: str, *, con: Any = None, history: Path | str | None = None
) -> list[Activity]:
    """A job's activity, oldest first (``con``: an open history connection to reuse)."""
    with reading(con, history) as c:
        rows = (
            c.cursor()
            .execute(
                "SELECT time, who, action, job_id, schedule, source, coalesce(detail, '')"
                " FROM activity WHERE job_id = $j ORDER BY time, action",
                {"j": job_id},
            )
            .fetchall()
        )
    return [Activity(*r) for r in rows]


def job_notes(job_id: str, *, con: Any = None, history: Path | str | None = None) -> list[Note]:
    """A job's notes, oldest first."""
    with reading(con, history) as c:
        rows = (
            c.cursor()
            .execute(
                "SELECT id, job_id, time, author, text FROM notes WHERE job_id = $j"
                " ORDER BY time, id",
                {"j": job_id},
            )
            .fetchall()
        )
    return [Note(*r) for r in rows]
