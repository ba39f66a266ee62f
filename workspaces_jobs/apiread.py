"""The one reader of one job from the Prefect API, with httpx alone.

``wsjobs show``, the web's detail view, the notify email and the Python API
(:func:`workspaces_jobs.jobs.read_job` is this function) all read a job here: its flow
run, task runs (its shards' too), log lines and progress artifact, as JSON, built into a
:class:`~workspaces_jobs.jobfacts.JobFact` by :mod:`workspaces_jobs.jobfacts`, paged by
:mod:`workspaces_jobs.apipages`, waiting a moment for steps a loaded server has not
recorded yet.

Why httpx and not Prefect's client: importing Prefect costs 0.65-0.8 s, more than the few
HTTP calls a read command makes (``wsjobs show`` took 1.05x ``prefect flow-run inspect``).
Nothing here imports Prefect; a test runs ``show`` in a subprocess and checks that
``prefect`` never enters ``sys.modules``. The API is reached through
:class:`workspaces_jobs.gateway.Api` (ids, not-found, retries).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from workspaces_jobs import apipages, jobfacts
from workspaces_jobs.catalog import CatalogError, load_inventory
from workspaces_jobs.gateway import Api, open_job_ids, resolve_job_id

#: A job that ended less than this long ago may still have steps the server has not
#: recorded (a loaded server lags tens of seconds behind on a big job).
RECENT_END = timedelta(minutes=1)
#: Seconds :func:`read_job` waits for step states to catch up with a finished job.
SETTLE_TIMEOUT = 10.0


def job_link(job_id: str) -> str:
    """The job's page in the Prefect UI."""
    from workspaces_jobs.server import ui_url  # the managed server's state: links only

    return f"{ui_url()}/runs/flow-run/{job_id}"


def read_job(
    job_id: str, *, with_logs: bool = True, clock: Callable[[], datetime] | None = None
) -> jobfacts.JobFact:
    """Everything about one job, read live from the Prefect API.

    Task-run states reach the API as events the server records asynchronously, so just
    after a job ends some of its steps can still read Running, or not be there at all.
    For a finished job this re-reads (briefly, bounded) until every step is final and,
    for a job that ran all its devices and ended in the last minute (``clock``), every
    planned device has its steps, so a user never sees a Completed job with devices
    In progress or Pending. ``job_id`` may be any unique prefix.
    """
    # server.py imports no Prefect; it is only needed once a job is actually read.
    from workspaces_jobs.server import ensure_api

    ensure_api()
    now = clock or (lambda: datetime.now(UTC))
    with Api() as api:
        job_id = resolve_job_id(job_id, live=lambda prefix: open_job_ids(api, prefix))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            job = _read_once(api, job_id, with_logs=with_logs)
            settled = jobfacts.settled(job) and not jobfacts.steps_missing(job, now(), RECENT_END)
            if settled or time.monotonic() > deadline:
                return job
            time.sleep(0.25)


def _read_once(api: Api, job_id: str, *, with_logs: bool) -> jobfacts.JobFact:
    run = jobfacts.run_from_json(api.flow_run(job_id))
    job = jobfacts.job_from_flow_run(run, progress=_progress(api, job_id))
    # A job spread over workers has its steps and lines in its shards (flows/spread.py).
    parents = apipages.shard_parents(_shards(api, job_id))
    ids = [job_id, *(str(i) for i in parents)]
    task_runs = _task_runs(api, ids)
    apipages.as_job_json(task_runs, parents)
    steps = [s for s in map(jobfacts.step_from_json, task_runs) if s is not None]
    # position is None until a step has finished: unfinished steps sort last.
    steps.sort(key=lambda s: (s.device, s.position is None, s.position or 0))
    job.steps = steps
    job.devices = jobfacts.devices_from_steps(job.id, steps, planned_devices(job))
    if with_logs:
        by_id = {s.id: s for s in steps}
        for page in _log_pages(api, ids):
            apipages.as_job_json(page, parents)
            job.logs.extend(jobfacts.log_from_json(line, by_id) for line in page)
    return job


def planned_devices(job: jobfacts.JobFact) -> list[str]:
    """Devices the job targets, so a device with no step yet shows as Pending."""
    try:
        return [d.name for d in load_inventory().resolve(job.parameters.get("target") or [])]
    except CatalogError:  # the inventory changed since; show what actually ran
        return []


def _progress(api: Api, job_id: str) -> float | None:
    rows = api.post_rows(
        "/artifacts/filter",
        {
            "artifacts": {"type": {"any_": ["progress"]}, "flow_run_id": {"any_": [job_id]}},
            "sort": "UPDATED_DESC",
            "limit": 1,
        },
    )
    return jobfacts.progress_from_artifact(_Data(rows[0].get("data"))) if rows else None


class _Data:
    def __init__(self, data: Any) -> None:
        self.data = data


def _shards(api: Api, job_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        rows = api.post_rows(
            "/flow_runs/filter", apipages.shards_body([UUID(job_id)], len(found), apipages.PAGE)
        )
        found.extend(rows)
        if len(rows) < apipages.PAGE:
            return found


def _task_runs(api: Api, job_ids: list[str]) -> list[dict[str, Any]]:
    def fetch(bound: datetime | None, offset: int, limit: int) -> list[dict[str, Any]]:
        body = apipages.task_runs_body([UUID(i) for i in job_ids], bound, offset, limit)
        return api.post_rows("/task_runs/filter", body)

    key: Callable[[dict[str, Any]], Any] = lambda r: jobfacts.parse_time(  # noqa: E731
        r["expected_start_time"]
    )
    found: list[dict[str, Any]] = []
    for rows in apipages.keyset_pages(fetch, key, lambda r: r["id"]):
        found.extend(rows)
    return found


def _log_pages(api: Api, job_ids: list[str]) -> Any:
    def fetch(bound: datetime | None, offset: int, limit: int) -> list[dict[str, Any]]:
        criteria: dict[str, Any] = {"flow_run_id": {"any_": job_ids}}
        if bound is not None:
            criteria["timestamp"] = {"after_": bound.isoformat()}
        body = {"logs": criteria, "sort": "TIMESTAMP_ASC", "limit": limit, "offset": offset}
        return api.post_rows("/logs/filter", body)

    return apipages.keyset_pages(
        fetch, lambda r: jobfacts.parse_time(r["timestamp"]), lambda r: r["id"]
    )
