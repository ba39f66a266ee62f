"""The history sync's direct path: read jobs straight from the Prefect server's database.

Measured on 1,000 jobs (3 devices x 3 steps x 10 lines): the API serialises ~60 jobs/s
however it is asked (bigger pages, more concurrent requests), while ``sqlite3`` reads the
same rows from the managed server's SQLite file at 2,000-3,000 jobs/s. So when the sync
runs beside the managed server (the embedded default) it reads the file, read-only, and
builds the very rows the API path builds (the same :mod:`workspaces_jobs.jobfacts`
functions on the same JSON shapes); the API path stays the reference, and a test
compares both paths' rows on one server.

The file is used only when all of these hold, else the sync takes the API and says why:

* ``WSJOBS_SYNC_SOURCE`` is ``auto`` (default) or ``database`` (``api``: never);
* the API the sync talks to is the managed server (its recorded URL), whose database is
  ``$WSJOBS_HOME/prefect/prefect.db`` — or ``PREFECT_SERVER_DATABASE_CONNECTION_URL``
  names an SQLite file; a PostgreSQL server (a team) is read through the API;
* the file's schema version (Alembic's ``alembic_version``) is one this code was checked
  against (:data:`KNOWN_SCHEMAS`): a Prefect upgrade that changes the tables falls back to
  the API instead of misreading them.

Prefect's SQLite stores times as naive UTC text; they are read as aware UTC datetimes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from workspaces_jobs import jobfacts, runmeta
from workspaces_jobs.jobfacts import Run, RunState, StateKind
from workspaces_jobs.reporting import rows as R

#: Alembic revisions of Prefect's SQLite schema whose tables this module reads as they are
#: (checked: prefect 3.9.1 = 27d8f4e1a6c9).
KNOWN_SCHEMAS = frozenset({"27d8f4e1a6c9"})
#: Job ids per ``IN (...)`` query (SQLite allows 32,766 parameters).
CHUNK = 500
#: Jobs per sync batch (one transaction) on this path: the API's pages cap its batches
#: at 200 jobs, the file has no such limit, and each DuckLake commit has a fixed cost.
#: Log rows are still written every ``sync.LOG_FLUSH`` rows, so memory stays bounded by
#: the batch's steps (1,000 jobs of 2,000 devices x 3 steps: 6M step rows).
BATCH = 1000
NON_FINAL = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


@dataclass(frozen=True)
class Choice:
    """Which path the sync takes, and the one line that says so."""

    database: Path | None
    line: str


def choose(api_url: str | None) -> Choice:
    """The managed server's SQLite file when the sync may and can read it (module doc)."""
    from workspaces_jobs.settings import get_settings

    mode = get_settings().sync_source
    if mode == "api":
        return Choice(None, "read the Prefect API (WSJOBS_SYNC_SOURCE=api)")
    path, why_not = _database_of(api_url)
    if path is None:
        return Choice(None, f"read the Prefect API ({why_not})")
    try:
        version = schema_version(path)
    except sqlite3.Error as exc:
        return Choice(None, f"read the Prefect API (cannot read {path}: {exc})")
    if version not in KNOWN_SCHEMAS:
        return Choice(
            None, f"read the Prefect API (database schema {version} is not one this version knows)"
        )
    return Choice(path, f"read the Prefect database directly ({path}, schema {version})")


def _database_of(api_url: str | None) -> tuple[Path | None, str]:
    url = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or os.environ.get(
        "PREFECT_API_DATABASE_CONNECTION_URL"
    )
    if url:
        if not url.startswith("sqlite"):
            return None, "the server's database is not SQLite"
        file = Path(url.split(":///", 1)[-1])
        return (file, "") if file.is_file() else (None, f"no database file at {file}")
    from workspaces_jobs import server

    info = server.read_state()
    if info is None or api_url is None or api_url.rstrip("/") != info.api_url.rstrip("/"):
        return None, "not the managed server"
    file = server.server_home() / "prefect.db"
    return (file, "") if file.is_file() else (None, f"no database file at {file}")


def schema_version(path: Path) -> str | None:
    with _connect(path) as con:
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


def _connect(path: Path) -> sqlite3.Connection:
    """Read-only: the server owns the file (WAL mode, so reading never blocks it)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    con.row_factory = sqlite3.Row
    return con


def _utc(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: str | None) -> str | None:
    """A stored time as the API writes it (ISO 8601 with an offset)."""
    when = _utc(value)
    return when.isoformat() if when else None


_RUN_COLUMNS = (
    "f.id, f.name, f.tags, f.parameters, f.run_count, f.created, f.updated, f.start_time,"
    " f.end_time, f.expected_start_time, f.deployment_id, f.state_type, f.state_name,"
    " s.message AS state_message, s.timestamp AS state_timestamp"
    " FROM flow_run f LEFT JOIN flow_run_state s ON s.id = f.state_id"
)


class Database:
    """Read-only reader of the Prefect server's SQLite file; methods mirror
    :mod:`reporting.source` and return the API's JSON shapes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = _connect(path)
        self._shard_jobs: dict[str, str] | None = None

    def _with_shards(self, job_ids: Sequence[Any]) -> tuple[list[str], dict[str, str]]:
        """These jobs' ids plus their shards' (a job spread over workers keeps its steps
        and lines in shard flow runs tagged ``shard-of:<job>``, flows/spread.py), and
        shard id -> job id. The shards are found with one scan per sync pass."""
        if self._shard_jobs is None:
            rows = self.con.execute(
                "SELECT id, tags FROM flow_run WHERE tags LIKE ?", [f'%"{runmeta.SHARD_TAG}%']
            )
            self._shard_jobs = {}
            for r in rows:
                job = runmeta.tag_value(json.loads(r["tags"] or "[]"), runmeta.SHARD_TAG)
                if job:
                    self._shard_jobs[str(r["id"])] = job
        wanted = {str(i) for i in job_ids}
        parents = {shard: job for shard, job in self._shard_jobs.items() if job in wanted}
        return [*wanted, *parents], parents

    def close(self) -> None:
        self.con.close()

    # -- flow runs ------------------------------------------------------------------------
    def job_runs(self, since: datetime | None) -> list[Run]:
        """Jobs to look at: all (``since`` None), else open ones and those changed since.

        The database can filter on ``updated`` (the API cannot), so "changed since" is
        exactly that."""
        like = f'%"{runmeta.JOB_TAG}"%'
        sql = f"SELECT {_RUN_COLUMNS} WHERE f.tags LIKE ?"
        params: list[Any] = [like]
        if since is not None:
            marks = ",".join("?" * len(NON_FINAL))
            sql += f" AND (f.state_type IN ({marks}) OR f.updated >= ?)"
            params += [*NON_FINAL, _stored(since)]
        sql += " ORDER BY f.expected_start_time, f.id"
        return [
            r
            for r in map(_run, self.con.execute(sql, params))
            if runmeta.JOB_TAG in r.tags and not runmeta.is_shard(r.tags)
        ]

    def runs_by_id(self, ids: Sequence[str]) -> list[Run]:
        out: list[Run] = []
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = self.con.execute(f"SELECT {_RUN_COLUMNS} WHERE f.id IN ({marks})", chunk)
            out.extend(map(_run, rows))
        return out

    # -- details of a batch ---------------------------------------------------------------
    def task_runs(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        job_ids, parents = self._with_shards(job_ids)
        for chunk in _chunks(job_ids):
            marks = ",".join("?" * len(chunk))
            rows = self.con.execute(
                "SELECT t.id, t.flow_run_id, t.name, t.start_time, t.end_time,"
                " t.expected_start_time, t.state_type, t.state_name, s.message"
                " FROM task_run t LEFT JOIN task_run_state s ON s.id = t.state_id"
                f" WHERE t.flow_run_id IN ({marks})",
                chunk,
            )
            for r in rows:
                state = (
                    {"type": r["state_type"], "name": r["state_name"], "message": r["message"]}
                    if r["state_type"]
                    else None
                )
                out.append(
                    {
                        "id": r["id"],
                        "flow_run_id": parents.get(str(r["flow_run_id"]), r["flow_run_id"]),
                        "name": r["name"],
                        "state": state,
                        "start_time": _iso(r["start_time"]),
                        "end_time": _iso(r["end_time"]),
                        "expected_start_time": _iso(r["expected_start_time"]),
                    }
                )
        return out

    def logs(self, job_ids: Sequence[str], since: datetime | None) -> Iterator[pa.Table]:
        """These jobs' log lines from ``since`` on (inclusive, as the API's ``after_``),
        oldest first, in pages of up to 50,000 rows as :data:`reporting.rows.RAW_LOGS`
        (columns straight from the cursor: no Python object per line)."""
        job_ids, parents = self._with_shards(job_ids)
        for chunk in _chunks(job_ids):
            marks = ",".join("?" * len(chunk))
            sql = (
                "SELECT id, flow_run_id, task_run_id, level, message, timestamp FROM log"
                f" WHERE flow_run_id IN ({marks})"
            )
            params: list[Any] = list(chunk)
            if since is not None:
                sql += " AND timestamp >= ?"
                params.append(_stored(since))
            cur = self.con.cursor()
            cur.row_factory = None  # tuples
            cur.execute(sql + " ORDER BY timestamp, id", params)
            while rows := cur.fetchmany(50_000):
                columns = list(zip(*rows, strict=True))
                if parents:
                    columns[1] = tuple(parents.get(str(j), j) for j in columns[1])
                yield R.raw_logs(columns, naive_utc=True)

    def states(self, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {str(i): [] for i in job_ids}
        for chunk in _chunks(job_ids):
            marks = ",".join("?" * len(chunk))
            rows = self.con.execute(
                "SELECT id, flow_run_id, type, name, message, timestamp FROM flow_run_state"
                f" WHERE flow_run_id IN ({marks})",
                chunk,
            )
            for r in rows:
                out[r["flow_run_id"]].append(
                    {
                        "id": r["id"],
                        "type": r["type"],
                        "name": r["name"],
                        "message": r["message"],
                        "timestamp": _iso(r["timestamp"]),
                    }
                )
        return out

    def progress(self, job_ids: Sequence[str]) -> dict[str, float | None]:
        """Each job's newest progress artifact (as :func:`reporting.source.progress_of`)."""
        out: dict[str, float | None] = {}
        for chunk in _chunks(job_ids):
            marks = ",".join("?" * len(chunk))
            rows = self.con.execute(
                "SELECT flow_run_id, data FROM artifact"
                f" WHERE type = 'progress' AND flow_run_id IN ({marks})"
                " ORDER BY updated DESC",
                chunk,
            )
            for r in rows:
                if r["flow_run_id"] not in out:
                    out[r["flow_run_id"]] = jobfacts.progress_from_artifact(_Artifact(r["data"]))
        return out


@dataclass
class _Artifact:
    data: Any

    def __post_init__(self) -> None:  # stored as JSON text, as the API would decode it
        if isinstance(self.data, str):
            try:
                self.data = json.loads(self.data)
            except ValueError:
                pass


def _stored(when: datetime) -> str:
    """A datetime as Prefect's SQLite stores it (naive UTC text), for comparisons."""
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _chunks(ids: Sequence[Any]) -> Iterator[list[str]]:
    items = [str(i) for i in ids]
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _run(r: sqlite3.Row) -> Run:
    state = (
        RunState(
            StateKind(r["state_type"]),
            r["state_name"],
            r["state_message"],
            _utc(r["state_timestamp"]),
        )
        if r["state_type"]
        else None
    )
    return Run(
        id=r["id"],
        name=r["name"],
        state=state,
        tags=json.loads(r["tags"] or "[]"),
        parameters=json.loads(r["parameters"] or "{}"),
        run_count=int(r["run_count"] or 0),
        created=_utc(r["created"]),
        updated=_utc(r["updated"]),
        start_time=_utc(r["start_time"]),
        end_time=_utc(r["end_time"]),
        expected_start_time=_utc(r["expected_start_time"]),
        deployment_id=r["deployment_id"],
    )
