"""One job for the detail view: from the history when it is final there, else live.

* A job the history holds as **settled** (final, and synced after its last log lines
  arrived) is read from the file: nothing about it can change any more, and a big job's
  thousands of log lines come from one query instead of hundreds of API pages.
* Any other job is read live (:func:`workspaces_jobs.jobs.read_job`, the same facts as
  ``wsjobs show``), so an In progress job shows its latest progress and log lines and a
  job the sync has not pulled yet is already there.
* When the API does not know the job (history kept longer than the server's retention)
  or cannot be reached, the history copy is shown with a note saying so.

Both paths build the same :class:`~workspaces_jobs.jobfacts.JobFact`. The Logs tab shows
at most :data:`MAX_LINES_PER_STEP` lines per step (the last ones) and says how many it
left out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from workspaces_jobs import logview
from workspaces_jobs.jobfacts import DeviceFact, JobFact, LogFact, StepFact
from workspaces_jobs.logview import LogGroup, StepLines, step_order  # noqa: F401

#: Log lines shown per step (the last ones); the rest: ``wsjobs show``, exports, Prefect UI.
MAX_LINES_PER_STEP = 500


@dataclass
class JobDetail:
    job: JobFact
    source: str  # "live" or "history"
    note: str | None = None  # why the history copy is shown

    @property
    def steps_by_device(self) -> dict[str, list[StepFact]]:
        out: dict[str, list[StepFact]] = defaultdict(list)
        for step in sorted(self.job.steps, key=step_order):
            out[step.device].append(step)
        return out


def group_logs(job: JobFact, *, cap: int = MAX_LINES_PER_STEP) -> list[LogGroup]:
    """Log lines per device, per step, the last ``cap`` of each (see :mod:`.logview`)."""
    return logview.group_logs(job, cap=cap)


def _dicts(con: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = con.cursor().execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def settled_in_history(con: Any, job_id: str) -> bool:
    """True when the sync marked the job settled: final, its last log lines synced."""
    row = (
        con.cursor()
        .execute("SELECT settled FROM sync_jobs WHERE job_id = $id", {"id": job_id})
        .fetchone()
    )
    return bool(row and row[0])


def job_from_history(con: Any, job_id: str) -> JobFact | None:
    """The job as the history file has it (the adapter the detail view falls back to)."""
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


def load_job(job_id: str, con_factory: Any) -> JobDetail | None:
    """The settled history copy, else live from the API, else the history copy with a
    note; None when neither knows the job.

    ``con_factory`` is a context manager factory yielding the history connection (the
    server's :meth:`~workspaces_jobs.web.state.WebState.db`), used only on fallback.
    """
    from workspaces_jobs.gateway import JobNotFound
    from workspaces_jobs.jobs import read_job

    with con_factory() as con:
        if settled_in_history(con, job_id):
            job = job_from_history(con, job_id)
            if job is not None:
                return JobDetail(job, "history")
    note: str | None
    try:
        return JobDetail(read_job(job_id), "live")
    except JobNotFound:
        note = "The Prefect API no longer has this job; this is the copy in the history file."
    except Exception as exc:  # API down or failing: the history copy is still useful
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        note = f"The Prefect API could not be read ({first}); this is the history file's copy."
    with con_factory() as con:
        job = job_from_history(con, job_id)
    return JobDetail(job, "history", note) if job else None
