"""Read one job from the Prefect API with httpx alone: ``wsjobs show``'s path.

Importing Prefect costs 0.65-0.8 s, more than the few HTTP calls a read command makes
(``wsjobs show`` took 1.05x ``prefect flow-run inspect``). This module reads the same
flow run, task runs, log lines, progress artifact and subscription record as
:func:`workspaces_jobs.jobs.read_job`, as JSON, and builds the job with the same
:mod:`workspaces_jobs.jobfacts` functions and the same rules (paging, waiting a moment
for steps a loaded server has not recorded yet). Nothing here imports Prefect; a test
runs ``show`` in a subprocess and checks that ``prefect`` never enters ``sys.modules``.

Credentials come from the environment :func:`workspaces_jobs.server.ensure_api` sets
(``PREFECT_API_URL``, ``PREFECT_API_AUTH_STRING`` sent as HTTP basic auth, as Prefect's
client sends it).
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from workspaces_jobs import apipages, jobfacts, runmeta
from workspaces_jobs.errors import NotFound, ServerUnreachable

#: A job that ended less than this long ago may still have steps the server has not
#: recorded (a loaded server lags tens of seconds behind on a big job).
RECENT_END = timedelta(minutes=1)
#: Seconds :func:`read_job` waits for step states to catch up with a finished job
#: (as :data:`workspaces_jobs.jobs.SETTLE_TIMEOUT`).
SETTLE_TIMEOUT = 10.0


class Api:
    """A small synchronous gateway to the Prefect API: JSON in and out, one error
    mapping (connection refused → ServerUnreachable, 404 → NotFound)."""

    def __init__(self, url: str | None = None, *, timeout: float = 30.0) -> None:
        base = url or os.environ.get("PREFECT_API_URL")
        if not base:
            raise ServerUnreachable("no Prefect API: run `wsjobs server start`")
        headers = {}
        auth = os.environ.get("PREFECT_API_AUTH_STRING")
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        self.url = base.rstrip("/")
        self.http = httpx.Client(base_url=self.url + "/", headers=headers, timeout=timeout)
        self._csrf: dict[str, str] | None = None

    def _csrf_headers(self) -> dict[str, str]:
        """The CSRF token the managed server asks of every POST (as Prefect's client gets
        it: ``GET /csrf-token?client=ID``; a server with CSRF off answers 422)."""
        if self._csrf is None:
            client = str(uuid.uuid4())
            response = self._send("GET", "csrf-token", params={"client": client})
            if response.status_code in (404, 422):
                self._csrf = {}
            else:
                response.raise_for_status()
                token = response.json()["token"]
                self._csrf = {"Prefect-Csrf-Token": token, "Prefect-Csrf-Client": client}
        return self._csrf

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"the Prefect API at {self.url} does not answer ({type(exc).__name__}): "
                "start it with `wsjobs server start`"
            ) from exc

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if method != "GET":
            kwargs["headers"] = self._csrf_headers()
        response = self._send(method, path.lstrip("/"), **kwargs)
        if response.status_code == 404:
            raise NotFound(f"not found in the Prefect API: {path}")
        response.raise_for_status()
        return response.json()

    def post_rows(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        rows = self.call("POST", path, json=body)
        assert isinstance(rows, list)
        return rows


def job_link(job_id: str) -> str:
    """The job's page in the Prefect UI."""
    from workspaces_jobs.server import ui_url

    return f"{ui_url()}/runs/flow-run/{job_id}"


def read_job(
    job_id: str, *, with_logs: bool = True, clock: Callable[[], datetime] | None = None
) -> jobfacts.JobFact:
    """The job with its devices, steps and (optionally) log lines, like
    :func:`workspaces_jobs.jobs.read_job`, waiting (bounded) for a just-ended job's
    steps to be recorded."""
    from workspaces_jobs.ids import resolve_job_id

    now = clock or (lambda: datetime.now(UTC))
    with Api() as api:
        job_id = resolve_job_id(job_id, live=lambda prefix: _open_ids(api, prefix))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            job = _read_once(api, job_id, with_logs=with_logs)
            settled = jobfacts.settled(job) and not jobfacts.steps_missing(job, now(), RECENT_END)
            if settled or time.monotonic() > deadline:
                return job
            time.sleep(0.25)


def _read_once(api: Api, job_id: str, *, with_logs: bool) -> jobfacts.JobFact:
    try:
        data = api.call("GET", f"/flow_runs/{job_id}")
    except NotFound as exc:
        raise NotFound(f"no job {job_id}: check the id with `wsjobs list`") from exc
    run = jobfacts.run_from_json(data)
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
    from workspaces_jobs.catalog import CatalogError, load_inventory

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
    from uuid import UUID

    found: list[dict[str, Any]] = []
    while True:
        rows = api.post_rows(
            "/flow_runs/filter", apipages.shards_body([UUID(job_id)], len(found), apipages.PAGE)
        )
        found.extend(rows)
        if len(rows) < apipages.PAGE:
            return found


def _task_runs(api: Api, job_ids: list[str]) -> list[dict[str, Any]]:
    from uuid import UUID

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


def _open_ids(api: Api, prefix: str) -> list[str]:
    """Ids of jobs not ended yet starting with ``prefix`` (as :func:`ids.api_candidates`)."""
    found: list[str] = []
    offset, page = 0, apipages.PAGE
    while True:
        rows = api.post_rows(
            "/flow_runs/filter",
            {
                "flow_runs": {
                    "tags": {"all_": [runmeta.JOB_TAG]},
                    "state": {
                        "type": {
                            "any_": ["SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"]
                        }
                    },
                },
                "limit": page,
                "offset": offset,
            },
        )
        found += [r["id"] for r in rows if str(r["id"]).startswith(prefix)]
        if len(rows) < page:
            return found
        offset += page
