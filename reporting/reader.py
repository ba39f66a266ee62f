"""The history reader the faces share: one job's copy, and what a list shows besides rows.

``wsjobs show`` (when the API does not answer), the web's detail view (a settled job, or
its fallback) and the web's list read the history file through these functions; rows of a
list come from :mod:`workspaces_jobs.reporting.query`. The faces hold no SQL of their own
for these, so a column renamed in ``reporting/sql/`` is changed here once. Every function
takes an open connection (read-only is enough) and reads with a cursor of its own.
"""

from __future__ import annotations

import json
from typing import Any

from workspaces_jobs.jobfacts import DeviceFact, JobFact, LogFact, StepFact
from workspaces_jobs.reporting.plan import Plan


def _dicts(con: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = con.cursor().execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def is_settled(con: Any, job_id: str) -> bool:
    """True when the sync marked the job settled: final, its last log lines synced."""
    row = (
        con.cursor()
        .execute("SELECT settled FROM sync_jobs WHERE job_id = $id", {"id": job_id})
        .fetchone()
    )
    return bool(row and row[0])


def job(con: Any, job_id: str) -> JobFact | None:
    """The job as the history file has it, None when it has not seen it."""
    rows = _dicts(
        con,
        "SELECT id, name, action, info, owner, status, reason, prefect_state_type, "
        "prefect_state_name, state_message, created, started, ended, expected_start, "
        "progress, deployment_id, parameters, tags, canceled_by, rerun_of, updated, "
        "recovered FROM jobs WHERE id = $id",
        {"id": job_id},
    )
    if not rows:
        return None
    row = rows[0]
    try:
        params = json.loads(row["parameters"]) if row["parameters"] else {}
    except ValueError:
        params = {}
    job = JobFact(
        id=row["id"],
        name=row["name"] or "",
        action=row["action"],
        info=row["info"] or "",
        owner=row["owner"] or "",
        status=row["status"],
        reason=row["reason"],
        prefect_state_type=row["prefect_state_type"],
        prefect_state_name=row["prefect_state_name"],
        state_message=row["state_message"],
        created=row["created"],
        started=row["started"],
        ended=row["ended"],
        expected_start=row["expected_start"],
        progress=row["progress"],
        deployment_id=row["deployment_id"],
        parameters=params if isinstance(params, dict) else {},
        tags=list(row["tags"] or []),
        canceled_by=row["canceled_by"],
        rerun_of=row["rerun_of"],
        updated=row["updated"],
        recovered=bool(row["recovered"]),
    )
    job.steps = [
        StepFact(**r)
        for r in _dicts(
            con,
            "SELECT id, job_id, device, step, position, critical, status, state_name, "
            "exit_code, message, started, ended FROM steps WHERE job_id = $id "
            "ORDER BY device, position NULLS LAST, step",
            {"id": job_id},
        )
    ]
    job.devices = [
        DeviceFact(**r)
        for r in _dicts(
            con,
            "SELECT job_id, device, status, steps_ok, steps_failed, started, ended "
            "FROM job_devices WHERE job_id = $id ORDER BY device",
            {"id": job_id},
        )
    ]
    job.logs = [
        LogFact(**r)
        for r in _dicts(
            con,
            "SELECT id, job_id, step_id, device, step, ts, level, stream, message "
            "FROM logs WHERE job_id = $id ORDER BY ts, id",
            {"id": job_id},
        )
    ]
    return job


def status_counts(con: Any, plan: Plan) -> dict[str, int]:
    """Jobs per status among those ``plan`` selects (the list's status chips)."""
    sql = f"SELECT j.status, count(*) FROM {plan.source} WHERE {plan.where.sql} GROUP BY 1"
    rows = con.cursor().execute(sql, plan.params).fetchall()
    return {str(status): int(n) for status, n in rows}


def count(con: Any, plan: Plan) -> int:
    """How many jobs ``plan`` selects."""
    row = con.cursor().execute(plan.count_sql(), plan.params).fetchone()
    return int(row[0]) if row else 0


def choices(con: Any) -> dict[str, list[str]]:
    """Known owners, actions and devices for the filter boxes' suggestions (bounded)."""
    out: dict[str, list[str]] = {}
    for name, sql in (
        ("owners", "SELECT DISTINCT owner FROM jobs WHERE owner IS NOT NULL"),
        ("actions", "SELECT DISTINCT action FROM jobs WHERE action IS NOT NULL"),
        ("devices", "SELECT DISTINCT device FROM job_devices"),
    ):
        rows = con.cursor().execute(f"{sql} ORDER BY 1 LIMIT 200").fetchall()
        out[name] = [str(r[0]) for r in rows]
    return out
