"""Job facts → Arrow tables shaped like the history tables, and the batch upserts.

Bulk writes go in as Arrow batches registered with DuckDB and inserted with one
``INSERT ... BY NAME SELECT`` per table (measured ~1.8M rows/s, against ~2k rows/s for
row-by-row ``executemany``). Every batch is de-duplicated by key first, last row wins.

The history is a DuckLake, which has no PRIMARY KEY and so no ``ON CONFLICT``: the keys
in :data:`KEYS` are kept here. An upsert deletes the batch's keys and inserts the batch,
inside the caller's transaction (so a reader sees both or neither); log lines are
insert-only and a batch adds only the ids not there yet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from workspaces_jobs.jobfacts import DeviceFact, JobFact, LogFact, StepFact

_TS = pa.timestamp("us", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    "jobs": pa.schema(
        [
            ("id", pa.string()),
            ("name", pa.string()),
            ("action", pa.string()),
            ("info", pa.string()),
            ("owner", pa.string()),
            ("status", pa.string()),
            ("reason", pa.string()),
            ("prefect_state_type", pa.string()),
            ("prefect_state_name", pa.string()),
            ("state_message", pa.string()),
            ("created", _TS),
            ("started", _TS),
            ("ended", _TS),
            ("expected_start", _TS),
            ("progress", pa.float64()),
            ("deployment_id", pa.string()),
            ("parameters", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("canceled_by", pa.string()),
            ("rerun_of", pa.string()),
            ("updated", _TS),
            ("synced", _TS),
            ("recovered", pa.bool_()),
        ]
    ),
    "steps": pa.schema(
        [
            ("id", pa.string()),
            ("job_id", pa.string()),
            ("device", pa.string()),
            ("step", pa.string()),
            ("position", pa.int32()),
            ("critical", pa.bool_()),
            ("status", pa.string()),
            ("state_name", pa.string()),
            ("exit_code", pa.int32()),
            ("message", pa.string()),
            ("started", _TS),
            ("ended", _TS),
        ]
    ),
    "job_devices": pa.schema(
        [
            ("job_id", pa.string()),
            ("device", pa.string()),
            ("status", pa.string()),
            ("steps_ok", pa.int32()),
            ("steps_failed", pa.int32()),
            ("started", _TS),
            ("ended", _TS),
        ]
    ),
    "logs": pa.schema(
        [
            ("id", pa.string()),
            ("job_id", pa.string()),
            ("step_id", pa.string()),
            ("device", pa.string()),
            ("step", pa.string()),
            ("ts", _TS),
            ("level", pa.string()),
            ("stream", pa.string()),
            ("message", pa.string()),
        ]
    ),
    "job_states": pa.schema(
        [
            ("id", pa.string()),
            ("job_id", pa.string()),
            ("ts", _TS),
            ("state_type", pa.string()),
            ("state_name", pa.string()),
            ("status", pa.string()),
            ("message", pa.string()),
        ]
    ),
    "notifications": pa.schema(
        [
            ("job_id", pa.string()),
            ("email", pa.string()),
            ("status", pa.string()),
            ("attempts", pa.int32()),
            ("last_error", pa.string()),
            ("sent_at", _TS),
            ("subscribed_at", _TS),
            ("subscribed_by", pa.string()),
            ("recovery_status", pa.string()),
            ("recovery_sent_at", _TS),
        ]
    ),
    "sync_jobs": pa.schema(
        [
            ("job_id", pa.string()),
            ("api_updated", _TS),
            ("fingerprint", pa.string()),
            ("settled", pa.bool_()),
            ("last_log_ts", _TS),
        ]
    ),
}

KEYS: dict[str, tuple[str, ...]] = {
    "jobs": ("id",),
    "steps": ("id",),
    "job_devices": ("job_id", "device"),
    "logs": ("id",),
    "job_states": ("id",),
    "notifications": ("job_id", "email"),
    "sync_jobs": ("job_id",),
}


def job_row(job: JobFact, synced: datetime) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "action": job.action,
        "info": job.info,
        "owner": job.owner,
        "status": job.status,
        "reason": job.reason,
        "prefect_state_type": job.prefect_state_type,
        "prefect_state_name": job.prefect_state_name,
        "state_message": job.state_message,
        "created": job.created,
        "started": job.started,
        "ended": job.ended,
        "expected_start": job.expected_start,
        "progress": job.progress,
        "deployment_id": job.deployment_id,
        "parameters": json.dumps(job.parameters, default=str, sort_keys=True),
        "tags": list(job.tags),
        "canceled_by": job.canceled_by,
        "rerun_of": job.rerun_of,
        "updated": job.updated,
        "synced": synced,
        "recovered": job.recovered,
    }


def _flat(fact: StepFact | DeviceFact | LogFact) -> dict[str, Any]:
    """A fact's fields as a dict. Its fields are plain values, so a shallow copy is the
    same dict ``dataclasses.asdict`` builds, without its deep copy of every value, which
    took a third of a full sync (profiled: 54 of 160 s on 1,000 jobs)."""
    return dict(vars(fact))


def step_row(step: StepFact) -> dict[str, Any]:
    return _flat(step)


def device_row(device: DeviceFact) -> dict[str, Any]:
    return _flat(device)


def log_row(log: LogFact) -> dict[str, Any]:
    return _flat(log)


#: Log lines as read (the API's JSON, the Prefect database's columns; a shard's lines
#: already carry their job's id), held until they are written: then one statement parses
#: them into ``logs`` rows (sql/parse_logs.sql). Parsing line by line in Python (a regex,
#: a dataclass and a dict per line) took more CPU than the rest of a direct sync.
RAW_LOGS = pa.schema(
    [
        ("id", pa.string()),
        ("job_id", pa.string()),
        ("step_id", pa.string()),
        ("level", pa.int64()),
        ("message", pa.string()),
        ("ts", _TS),
    ]
)


def raw_logs_from_json(lines: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The API's log JSON as :data:`RAW_LOGS` (its times carry an offset)."""
    return pa.Table.from_arrays(
        [
            pa.array([x["id"] for x in lines], pa.string()),
            pa.array([x["flow_run_id"] for x in lines], pa.string()),
            pa.array([x.get("task_run_id") for x in lines], pa.string()),
            pa.array([x["level"] for x in lines], pa.int64()),
            pa.array([x["message"] for x in lines], pa.string()),
            pa.array([x["timestamp"] for x in lines], pa.string()).cast(_TS),
        ],
        schema=RAW_LOGS,
    )


def raw_logs(columns: Sequence[Sequence[Any]], *, naive_utc: bool = False) -> pa.Table:
    """Columns (id, job id, step id, level, message, time as ISO text) as :data:`RAW_LOGS`;
    ``naive_utc``: the times have no offset and are UTC (Prefect's SQLite)."""
    ids, jobs, steps, levels, messages, stamps = columns
    times = pa.array(stamps, pa.string())
    ts = times.cast(pa.timestamp("us")).cast(_TS) if naive_utc else times.cast(_TS)
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(jobs, pa.string()),
            pa.array(steps, pa.string()),
            pa.array(levels, pa.int64()),
            pa.array(messages, pa.string()),
            ts,
        ],
        schema=RAW_LOGS,
    )


def step_names(steps: Iterable[StepFact]) -> pa.Table:
    """Step id -> device and step name: where a log line without tags takes them from."""
    rows = [(s.id, s.device, s.step) for s in steps]
    return pa.Table.from_arrays(
        [pa.array([r[i] for r in rows], pa.string()) for i in range(3)],
        names=["id", "device", "step"],
    )


class LogColumns:
    """Log lines as read (:data:`RAW_LOGS` tables), page by page, until they are written."""

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []
        self.rows = 0
        self._made: tuple[pa.Table, int] | None = None  # to_arrow's table, of how many parts

    def __len__(self) -> int:
        return self.rows

    def add(self, lines: pa.Table) -> None:
        self.parts.append(lines)
        self.rows += lines.num_rows

    def to_arrow(self) -> pa.Table:
        """One table, de-duplicated by id (last wins, like :func:`to_arrow`); made once."""
        if self._made is None or self._made[1] != len(self.parts):
            table = pa.concat_tables(self.parts) if self.parts else RAW_LOGS.empty_table()
            ids = table.column("id").to_pylist()
            if len(set(ids)) != len(ids):
                last = {line_id: i for i, line_id in enumerate(ids)}
                table = table.take(sorted(last.values()))
            self._made = (table, len(self.parts))
        return self._made[0]


def newest_lines(lines: pa.Table, newest: dict[str, datetime]) -> None:
    """Raise ``newest[job]`` to the time of each job's newest line in ``lines``."""
    if lines.num_rows == 0:
        return
    for row in lines.group_by("job_id").aggregate([("ts", "max")]).to_pylist():
        job, ts = row["job_id"], row["ts_max"]
        if job not in newest or ts > newest[job]:
            newest[job] = ts


def insert_logs(
    cur: duckdb.DuckDBPyConnection, lines: pa.Table, steps: pa.Table, *, new: bool = False
) -> dict[str, int]:
    """Parse ``lines`` (:data:`RAW_LOGS`) into ``logs`` rows and insert those whose id is
    not there yet; returns how many were added per job. ``new``: no line of theirs can be
    there (a pass from an empty history), so nothing is looked up.

    The search for existing ids is limited to the lines' jobs and time range (a log id
    never changes its line), so Parquet files outside it are skipped by their statistics."""
    from workspaces_jobs.reporting.prune import sql_file

    if lines.num_rows == 0:
        return {}
    cur.register("_raw", lines)
    cur.register("_step_names", steps)
    try:
        parsed = sql_file("parse_logs.sql")
        if new:
            cur.execute(f"INSERT INTO logs BY NAME {parsed}")
            counts = lines.group_by("job_id").aggregate([("id", "count")]).to_pylist()
            return {r["job_id"]: int(r["id_count"]) for r in counts}
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE _fresh AS SELECT * FROM ({parsed}) b ANTI JOIN"
            " (SELECT id FROM logs WHERE ts >= (SELECT min(ts) FROM _raw)"
            " AND ts <= (SELECT max(ts) FROM _raw)"
            " AND job_id IN (SELECT DISTINCT job_id FROM _raw)) o ON o.id = b.id"
        )
        added = dict(cur.execute("SELECT job_id, count(*) FROM _fresh GROUP BY job_id").fetchall())
        if added:
            cur.execute("INSERT INTO logs BY NAME SELECT * FROM _fresh")
        cur.execute("DROP TABLE _fresh")
        return {str(k): int(v) for k, v in added.items()}
    finally:
        cur.unregister("_raw")
        cur.unregister("_step_names")


def fingerprint(job: JobFact, steps: Sequence[StepFact], devices: Sequence[DeviceFact]) -> str:
    """A hash of what a user sees of the job (not log lines, not ``updated``): to count
    real changes, and to leave unchanged rows untouched. A state change always shows in
    the job row, so the state history needs no part in it."""
    row = job_row(job, synced=datetime.min)
    row.pop("synced")
    row.pop("updated")
    if not row["recovered"]:  # histories synced before 004 keep their fingerprints
        row.pop("recovered")
    payload = [
        row,
        sorted((_flat(s) for s in steps), key=lambda s: s["id"]),
        sorted((_flat(d) for d in devices), key=lambda d: d["device"]),
    ]
    text = json.dumps(payload, default=str, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()


def to_arrow(table: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows → an Arrow table of ``table``'s schema, de-duplicated by key (last wins)."""
    key = KEYS[table]
    unique = {tuple(r[k] for k in key): r for r in rows}
    schema = SCHEMAS[table]
    return pa.Table.from_pylist([dict(r) for r in unique.values()], schema=schema)


def upsert(cur: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> int:
    """Replace rows by key (delete the batch's keys, insert the batch); returns the rows
    written. Run it inside a transaction: DuckLake has no ``INSERT OR REPLACE``."""
    if data.num_rows == 0:
        return 0
    name = _table(table)
    match = " AND ".join(f"t.{k} = b.{k}" for k in KEYS[name])
    cur.register("_batch", data)
    try:
        cur.execute(f"DELETE FROM {name} t USING _batch b WHERE {match}")
        cur.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _batch")
    finally:
        cur.unregister("_batch")
    return int(data.num_rows)


def insert(cur: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> int:
    """Insert rows whose keys the caller knows are not there (a sync pass that started
    from an empty history): one statement, no delete by key."""
    if data.num_rows == 0:
        return 0
    cur.register("_batch", data)
    try:
        cur.execute(f"INSERT INTO {_table(table)} BY NAME SELECT * FROM _batch")
    finally:
        cur.unregister("_batch")
    return int(data.num_rows)


def write_jobs(cur: duckdb.DuckDBPyConnection, data: pa.Table, *, replace: bool = True) -> int:
    """Jobs rows with their device counts (migration 003) read from ``job_devices`` in the
    same statement, so write the batch's devices first. The same values as an upsert and
    :func:`refresh_device_counts`, without its UPDATE (in a DuckLake an UPDATE deletes and
    re-inserts every row it touches: a second write of each job). ``replace=False``: the
    keys are known to be new (see :func:`insert`)."""
    from workspaces_jobs.reporting.fields import DEVICE_AGGREGATES

    if data.num_rows == 0:
        return 0
    cur.register("_batch", data)
    try:
        if replace:
            cur.execute("DELETE FROM jobs t USING _batch b WHERE t.id = b.id")
        cur.execute(
            "INSERT INTO jobs BY NAME SELECT b.*, a.devices AS device_names,"
            " a.devices_ok, a.devices_failed FROM _batch b LEFT JOIN"
            f" ({DEVICE_AGGREGATES} WHERE d.job_id IN (SELECT id FROM _batch)"
            " GROUP BY d.job_id) a ON a.job_id = b.id"
        )
    finally:
        cur.unregister("_batch")
    return int(data.num_rows)


def refresh_device_counts(cur: duckdb.DuckDBPyConnection, job_ids: list[str] | None) -> None:
    """Set ``jobs.device_names/devices_ok/devices_failed`` from ``job_devices`` for these
    jobs (all when None): the per-job counts the list and exports read (migration 003)."""
    from workspaces_jobs.reporting.fields import DEVICE_AGGREGATES

    if job_ids is not None and not job_ids:
        return
    where = " WHERE d.job_id IN (SELECT unnest($ids))" if job_ids is not None else ""
    cur.execute(
        "UPDATE jobs SET device_names = a.devices, devices_ok = a.devices_ok, "
        "devices_failed = a.devices_failed "
        f"FROM ({DEVICE_AGGREGATES}{where} GROUP BY d.job_id) a WHERE jobs.id = a.job_id",
        {"ids": job_ids} if job_ids is not None else {},
    )


def insert_new(cur: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> list[str]:
    """Insert rows whose key is not there yet; returns the ``job_id`` of each row added.

    For ``logs`` the search for existing ids is limited to the batch's jobs and time
    range (a log id never changes its line), so Parquet files outside it are skipped by
    their statistics rather than read."""
    if data.num_rows == 0:
        return []
    name = _table(table)
    key = KEYS[name]
    match = " AND ".join(f"o.{k} = b.{k}" for k in key)
    existing = f"(SELECT {', '.join(key)} FROM {name}"
    if name == "logs":
        existing += (
            " WHERE ts >= (SELECT min(ts) FROM _batch) AND ts <= (SELECT max(ts) FROM _batch)"
            " AND job_id IN (SELECT DISTINCT job_id FROM _batch)"
        )
    existing += ")"
    cur.register("_batch", data)
    try:
        cur.execute(
            "CREATE OR REPLACE TEMP TABLE _fresh AS SELECT b.* FROM _batch b"
            f" ANTI JOIN {existing} o ON {match}"
        )
        added = [r[0] for r in cur.execute("SELECT job_id FROM _fresh").fetchall()]
        if added:
            cur.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _fresh")
        cur.execute("DROP TABLE _fresh")
    finally:
        cur.unregister("_batch")
    return added


def _table(name: str) -> str:
    if name not in SCHEMAS:  # identifiers come from this allowlist only
        raise ValueError(f"not a history table: {name!r}")
    return name
