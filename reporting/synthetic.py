"""Synthetic job histories, written through the real schema with Arrow batches.

Two uses, one writer:

- tests describe a handful of jobs as dicts (:func:`add_jobs`) — only the fields they
  care about; the rest gets plausible defaults — and query them through the real list,
  filter and export code;
- benchmarks fill a file with 100k–1M jobs (:func:`generate`), built column-wise with
  ``pyarrow.compute`` (no Python loop per row) and inserted batch by batch, as the sync
  does (``INSERT ... BY NAME`` from an Arrow table, never ``executemany``).

Both write into a connection opened by ``reporting.store.open_store`` (so the file has the
migrated schema) and commit per batch.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from workspaces_jobs.reporting.rows import refresh_device_counts
from workspaces_jobs.status import JobStatus

_TS = pa.timestamp("us", tz="UTC")


def insert_arrow(con: Any, table: str, batch: pa.Table) -> int:
    """Insert an Arrow table into ``table`` by column name; columns left out stay NULL."""
    if table not in ("jobs", "steps", "job_devices", "logs", "job_states"):
        raise ValueError(f"unknown history table {table!r}")
    if batch.num_rows == 0:
        return 0
    name = f"_synthetic_{table}"
    con.register(name, batch)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
    finally:
        con.unregister(name)
    return batch.num_rows


# --- a few jobs, described by tests ------------------------------------------------------


def _final(status: str) -> bool:
    return JobStatus(status).is_final


def job_row(index: int = 0, **values: Any) -> dict[str, Any]:
    """A ``jobs`` row with defaults; ``created`` defaults to now minus ``index`` minutes."""
    status = values.get("status", JobStatus.COMPLETED.value)
    created = values.get("created") or datetime.now(UTC) - timedelta(minutes=index + 1)
    started = values.get("started", None if status == JobStatus.PENDING.value else created)
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": f"synthetic-{index}",
        "action": "ok",
        "info": "",
        "owner": "alice",
        "status": status,
        "reason": "failed" if status == JobStatus.ERROR.value else None,
        "prefect_state_type": None,
        "prefect_state_name": status,
        "state_message": None,
        "created": created,
        "started": started,
        "ended": (started + timedelta(seconds=5)) if started and _final(status) else None,
        "expected_start": created,
        "progress": 100.0 if _final(status) else 0.0,
        "deployment_id": None,
        "parameters": {},
        "tags": ["workspaces"],
        "canceled_by": None,
        "rerun_of": None,
        "updated": created,
        "synced": datetime.now(UTC),
        "recovered": False,
    }
    row.update({k: v for k, v in values.items() if k not in ("devices", "logs")})
    if not isinstance(row["parameters"], str):
        row["parameters"] = json.dumps(row["parameters"])
    return row


def add_jobs(con: Any, jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Write jobs given as dicts: job columns, plus optional ``devices`` and ``logs``.

    ``devices``: names, or dicts ``{"device", "status", "steps": [{"step", "status",
    "exit_code"}]}``; ``logs``: messages, or dicts with ``ts/device/step/stream/level``.
    Returns the job ids in order.
    """
    job_rows: list[dict[str, Any]] = []
    dev_rows: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    log_rows: list[dict[str, Any]] = []
    for i, spec in enumerate(jobs):
        job = job_row(i, **spec)
        job_rows.append(job)
        for d in spec.get("devices", ()):
            dev: dict[str, Any] = {"device": d} if isinstance(d, str) else dict(d)
            steps: list[dict[str, Any]] = dev.pop("steps", [{"step": "main"}])
            dev_status = dev.get("status", job["status"])
            n_failed = sum(1 for st in steps if st.get("status", "Completed") != "Completed")
            dev_rows.append(
                {
                    "job_id": job["id"],
                    "device": dev["device"],
                    "status": dev_status,
                    "steps_ok": len(steps) - n_failed,
                    "steps_failed": n_failed,
                    "started": job["started"],
                    "ended": job["ended"],
                }
            )
            for pos, step in enumerate(steps):
                step_rows.append(
                    {
                        "id": str(uuid.uuid4()),
                        "job_id": job["id"],
                        "device": dev["device"],
                        "step": step.get("step", f"step{pos}"),
                        "position": pos,
                        "critical": step.get("critical", True),
                        "status": step.get("status", "Completed"),
                        "state_name": step.get("status", "Completed"),
                        "exit_code": step.get("exit_code", 0),
                        "message": None,
                        "started": job["started"],
                        "ended": job["ended"],
                    }
                )
        for n, line in enumerate(spec.get("logs", ())):
            log = {"message": line} if isinstance(line, str) else dict(line)
            log_rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "job_id": job["id"],
                    "step_id": None,
                    "device": log.get("device"),
                    "step": log.get("step"),
                    "ts": log.get("ts") or (job["created"] + timedelta(seconds=n + 1)),
                    "level": log.get("level", "INFO"),
                    "stream": log.get("stream", "out" if log.get("device") else None),
                    "message": log["message"],
                }
            )
    _insert_rows(con, "jobs", job_rows, _JOB_TYPES)
    _insert_rows(con, "job_devices", dev_rows, _DEVICE_TYPES)
    _insert_rows(con, "steps", step_rows, _STEP_TYPES)
    _insert_rows(con, "logs", log_rows, _LOG_TYPES)
    refresh_device_counts(con, [j["id"] for j in job_rows])
    return [j["id"] for j in job_rows]


_JOB_TYPES = {
    "created": _TS,
    "started": _TS,
    "ended": _TS,
    "expected_start": _TS,
    "updated": _TS,
    "synced": _TS,
    "progress": pa.float64(),
    "tags": pa.list_(pa.string()),
    "recovered": pa.bool_(),
}
_DEVICE_TYPES = {"started": _TS, "ended": _TS, "steps_ok": pa.int32(), "steps_failed": pa.int32()}
_STEP_TYPES = {
    "started": _TS,
    "ended": _TS,
    "position": pa.int32(),
    "exit_code": pa.int32(),
    "critical": pa.bool_(),
}
_LOG_TYPES = {"ts": _TS}


def _insert_rows(
    con: Any, table: str, rows: list[dict[str, Any]], types: Mapping[str, pa.DataType]
) -> None:
    if not rows:
        return
    columns = {
        key: pa.array([r[key] for r in rows], type=types.get(key, pa.string())) for key in rows[0]
    }
    insert_arrow(con, table, pa.table(columns))


# --- many jobs, for benchmarks ----------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How a synthetic history looks; the defaults resemble a busy fleet."""

    jobs: int = 100_000
    devices_per_job: int = 2
    steps_per_device: int = 2
    logs_per_step: int = 2
    fleet: int = 200
    days: int = 365
    batch: int = 50_000
    seed: int = 7


_ACTIONS = ["patch", "reboot", "inventory", "disk-report", "deploy", "cert-renew", "backup", "ok"]
_OWNERS = [f"user{i:02d}" for i in range(20)]
_INFOS = [f"change CHG{i:05d}: update package {p}" for i, p in enumerate(["openssl", "curl"] * 250)]
_MESSAGES = [
    "starting",
    "downloading 50% of the update",
    "installed package",
    "warning: disk almost full",
    "connection reset by peer; retrying",
    "done",
    "exit code 1: permission denied",
    "checksum ok",
]
# 100 slots, so a uniform index in [0, 100) draws statuses with these weights.
_STATUS_DRAW = (
    [JobStatus.COMPLETED.value] * 72
    + [JobStatus.COMPLETED_WITH_ERRORS.value] * 10
    + [JobStatus.ERROR.value] * 10
    + [JobStatus.CANCELED.value] * 3
    + [JobStatus.PENDING.value] * 2
    + [JobStatus.IN_PROGRESS.value] * 3
)


def _draw(n: int, size: int, seed: int) -> pa.Array:
    """``n`` uniform integers in ``[0, size)``, reproducible from ``seed``."""
    rnd = pc.random(n, initializer=seed)
    return pc.cast(pc.floor(pc.multiply(rnd, size)), pa.int64())


def _ids(prefix: str, numbers: pa.Array, width: int = 12) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(numbers, pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, text, "")


def _repeat_index(n: int, times: int) -> pa.Array:
    """[0,0,1,1,...] — row i of a child table belongs to parent i // times."""
    return pc.cast(pc.floor(pc.divide(pa.array(range(n * times)), float(times))), pa.int64())


def _batch_tables(first: int, n: int, shape: Shape, start: datetime) -> dict[str, pa.Table]:
    seed = shape.seed * 1_000_003 + first
    idx = pa.array(range(first, first + n), pa.int64())
    span_us = shape.days * 86_400_000_000
    start_us = int(start.timestamp() * 1_000_000)
    # Evenly spread over the period, oldest first (as a sync appends them).
    created_us = pc.add(start_us, pc.multiply(idx, span_us // max(shape.jobs, 1)))
    created = pc.cast(created_us, _TS)
    status = pc.take(pa.array(_STATUS_DRAW), _draw(n, 100, seed))
    final = pc.is_in(status, pa.array([s.value for s in JobStatus if s.is_final]))
    pending = pc.equal(status, JobStatus.PENDING.value)
    null_ts = pa.nulls(n, _TS)
    started = pc.if_else(pending, null_ts, pc.cast(pc.add(created_us, 1_000_000), _TS))
    dur_us = pc.add(2_000_000, pc.multiply(_draw(n, 600, seed + 1), 1_000_000))
    ended = pc.if_else(final, pc.cast(pc.add(pc.add(created_us, 1_000_000), dur_us), _TS), null_ts)
    action_i = _draw(n, len(_ACTIONS), seed + 2)
    owner_i = _draw(n, len(_OWNERS), seed + 3)
    tag_lists = pa.array(
        [["workspaces", f"action:{a}", f"owner:{o}"] for a in _ACTIONS for o in _OWNERS]
    )
    # Random UUIDs as Prefect makes them: sequential ids would let DuckDB's min/max
    # zone maps prune id lookups that real histories cannot prune.
    rng = random.Random(seed)
    job_ids = pa.array([str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)])
    is_error = pc.equal(status, JobStatus.ERROR.value)
    jobs = pa.table(
        {
            "id": job_ids,
            "name": _ids("synthetic-", idx),
            "action": pc.take(pa.array(_ACTIONS), action_i),
            "info": pc.take(pa.array(_INFOS), _draw(n, len(_INFOS), seed + 4)),
            "owner": pc.take(pa.array(_OWNERS), owner_i),
            "status": status,
            "reason": pc.if_else(is_error, pa.scalar("failed"), pa.nulls(n, pa.string())),
            "prefect_state_name": status,
            "created": created,
            "started": started,
            "ended": ended,
            "progress": pc.if_else(final, 100.0, pc.if_else(pending, 0.0, 50.0)),
            "parameters": pc.binary_join_element_wise(
                '{"package": "pkg', pc.cast(_draw(n, 50, seed + 5), pa.string()), '"}', ""
            ),
            "tags": pc.take(tag_lists, pc.add(pc.multiply(action_i, len(_OWNERS)), owner_i)),
            "updated": pc.if_else(final, ended, created),
        }
    )
    k = shape.devices_per_job
    parent = _repeat_index(n, k)
    slot = pc.subtract(pa.array(range(n * k), pa.int64()), pc.multiply(parent, k))
    # Device of slot j in job i: (7 i + j) mod fleet -- spread over the fleet, no repeats.
    dev_no = pc.add(pc.multiply(pc.take(idx, parent), 7), slot)
    wraps = pc.cast(pc.floor(pc.divide(dev_no, float(shape.fleet))), pa.int64())
    dev_no = pc.subtract(dev_no, pc.multiply(wraps, shape.fleet))
    job_status = pc.take(status, parent)
    cwe = pc.equal(job_status, JobStatus.COMPLETED_WITH_ERRORS.value)
    dev_status = pc.if_else(
        pc.and_(cwe, pc.equal(slot, 0)),
        pa.scalar(JobStatus.ERROR.value),
        pc.if_else(cwe, pa.scalar(JobStatus.COMPLETED.value), job_status),
    )
    dev_failed = pc.is_in(dev_status, pa.array([JobStatus.ERROR.value, JobStatus.CANCELED.value]))
    s = shape.steps_per_device
    devices = pa.table(
        {
            "job_id": pc.take(job_ids, parent),
            "device": _ids("dev", dev_no, 4),
            "status": dev_status,
            "steps_ok": pc.cast(pc.if_else(dev_failed, s - 1, s), pa.int32()),
            "steps_failed": pc.cast(pc.if_else(dev_failed, 1, 0), pa.int32()),
            "started": pc.take(started, parent),
            "ended": pc.take(ended, parent),
        }
    )
    step_parent = _repeat_index(n * k, s)  # index into devices
    step_rows = pa.array(range(n * k * s), pa.int64())
    step_pos = pc.subtract(step_rows, pc.multiply(step_parent, s))
    step_failed = pc.and_(pc.take(dev_failed, step_parent), pc.equal(step_pos, s - 1))
    steps = pa.table(
        {
            "id": _ids("00000000-0000-4000-9000-", pc.add(step_rows, first * k * s)),
            "job_id": pc.take(devices["job_id"], step_parent),
            "device": pc.take(devices["device"], step_parent),
            "step": pc.binary_join_element_wise("step", pc.cast(step_pos, pa.string()), ""),
            "position": pc.cast(step_pos, pa.int32()),
            "critical": pc.equal(step_pos, 0),
            "status": pc.if_else(step_failed, pa.scalar("Failed"), pa.scalar("Completed")),
            "exit_code": pc.cast(pc.if_else(step_failed, 1, 0), pa.int32()),
            "started": pc.take(devices["started"], step_parent),
            "ended": pc.take(devices["ended"], step_parent),
        }
    )
    per_job = k * s * shape.logs_per_step
    log_rows = pa.array(range(n * per_job), pa.int64())
    log_parent = _repeat_index(n * k * s, shape.logs_per_step)  # index into steps
    log_job = _repeat_index(n, per_job)  # index into jobs
    # Each job's lines are 100 ms apart, starting 1 s after it was created.
    offset_us = pc.multiply(pc.subtract(log_rows, pc.multiply(log_job, per_job)), 100_000)
    log_ts = pc.cast(pc.add(pc.take(created_us, log_job), pc.add(offset_us, 1_000_000)), _TS)
    m = n * per_job
    logs = pa.table(
        {
            "id": _ids("00000000-0000-4000-a000-", pc.add(log_rows, first * per_job)),
            "job_id": pc.take(steps["job_id"], log_parent),
            "step_id": pc.take(steps["id"], log_parent),
            "device": pc.take(steps["device"], log_parent),
            "step": pc.take(steps["step"], log_parent),
            "ts": log_ts,
            "level": pa.array(["INFO"] * m),
            "stream": pa.array(["out"] * m),
            # Varied text (few lines repeat exactly), as real output is.
            "message": pc.binary_join_element_wise(
                pc.take(pa.array(_MESSAGES), _draw(m, len(_MESSAGES), seed + 6)),
                pc.cast(_draw(m, 1_000_000, seed + 7), pa.string()),
                " #",
            ),
        }
    )
    return {"jobs": jobs, "job_devices": devices, "steps": steps, "logs": logs}


def generate(
    con: Any,
    shape: Shape | None = None,
    *,
    end: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Fill the history with ``shape.jobs`` jobs created over the ``shape.days`` before ``end``.

    Ids are reproducible from ``shape.seed``, so a second call on the same file collides
    on purpose: generate into a fresh file. Returns rows per table.
    """
    shape = shape or Shape()
    end = end or datetime.now(UTC)
    start = end - timedelta(days=shape.days)
    counts = dict.fromkeys(("jobs", "job_devices", "steps", "logs"), 0)
    for first in range(0, shape.jobs, shape.batch):
        n = min(shape.batch, shape.jobs - first)
        tables = _batch_tables(first, n, shape, start)
        con.execute("BEGIN TRANSACTION")
        try:
            for name, table in tables.items():
                counts[name] += insert_arrow(con, name, table)
            refresh_device_counts(con, tables["jobs"]["id"].to_pylist())
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if progress:
            progress(first + n, shape.jobs)
    return counts
