"""What the history sync reads from the Prefect API: changed jobs and their details, in pages.

Prefect 3.9.1 can neither filter nor sort flow runs by ``updated`` (``FlowRunFilter`` has no
``updated`` field and ``FlowRunSort`` no ``UPDATED_*``), so "every job changed since the
watermark" is assembled from what the server does index, all with server-minted times:

* **open jobs** — state type SCHEDULED/PENDING/RUNNING/PAUSED/CANCELLING: re-checked on
  every sync until they are final (new jobs are here too);
* **jobs that ended since the watermark** — ``end_time >= watermark - overlap``
  (``end_time`` is the server's timestamp of the first final state);
* **jobs the history has not settled** — re-read by id: final less than the settle window
  ago (log lines still arriving), or Error by inactivity/crash within the late window (a
  late completion flips such a run to Completed without moving ``end_time``).

Each list is paged with a **keyset** on the column it is sorted by (never offset paging:
a row that moves while we page would be skipped or read twice). Rows at the page
boundary come again on the next page and are dropped by id; only if more rows than a
page share one key value does paging use an offset *within that value*.

Details are fetched per batch of jobs, not per job: task runs, logs and progress
artifacts with ``any_`` filters over the batch's ids. State histories have no batch
endpoint and are read concurrently, only for jobs whose ``updated`` changed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, Log, State, StateType, TaskRun, Variable
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort, LogSort

from workspaces_jobs import jobfacts, runmeta
from workspaces_jobs.apipages import (
    Keyset,
    as_job_json,
    as_job_rows,
    logs_filter,
    shards_body,
    task_runs_body,
)

#: The server's largest page (``PREFECT_API_DEFAULT_LIMIT``).
PAGE = 200
#: Tags per ``tags.any_`` filter: an SQLite server builds ``json_array(tag, ...)`` of them
#: and SQLite allows 127 function arguments (checked: 150 tags answered 500 "too many
#: arguments on function json_array", which broke every API sync of over 127 jobs).
SHARD_TAGS = 100
#: Prefix of the Prefect Variables the notifier keeps subscriptions in.
NOTIFY_PREFIX = "wsjobs-notify-"

NON_FINAL = [
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.RUNNING,
    StateType.PAUSED,
    StateType.CANCELLING,
]

T = TypeVar("T")
Fetch = Callable[[Any, int, int], Awaitable[list[T]]]


async def keyset_pages(
    fetch: Fetch[T], key: Callable[[T], Any], ident: Callable[[T], Any], page: int = PAGE
) -> AsyncIterator[list[T]]:
    """Pages of an ordered result without offset paging (the rule is
    :class:`workspaces_jobs.apipages.Keyset`, shared with the live readers).

    ``fetch(bound, offset, limit)`` returns up to ``limit`` rows whose key is at or past
    ``bound`` (None: from the start) in key order, skipping ``offset`` rows.
    """
    cursor: Keyset[T] = Keyset(key, ident, page)
    while not cursor.done:
        fresh = cursor.take(await fetch(cursor.bound, cursor.offset, page))
        if fresh:
            yield fresh


def _dt(value: datetime) -> Any:
    """Prefect's filter models are typed with its own DateTime; a datetime validates fine."""
    return value


def _jobs(**criteria: Any) -> FlowRunFilter:
    return FlowRunFilter(tags=FlowRunFilterTags(all_=[runmeta.JOB_TAG]), **criteria)


def _open_filter(bound: datetime | None = None) -> FlowRunFilter:
    extra = (
        {"expected_start_time": FlowRunFilterExpectedStartTime(after_=_dt(bound))} if bound else {}
    )
    return _jobs(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=NON_FINAL)), **extra)


def _ended_filter(since: datetime | None, bound: datetime | None = None) -> FlowRunFilter:
    window: dict[str, Any] = {}
    if since is not None:
        window["after_"] = _dt(since)
    if bound is not None:
        window["before_"] = _dt(bound)
    if not window:
        window["is_null_"] = False
    return _jobs(end_time=FlowRunFilterEndTime(**window))


async def server_time(client: PrefectClient) -> datetime | None:
    """The server's clock (HTTP ``Date`` of a health check), rounded down to be safe."""
    response = await client.request("GET", "/health")
    header = response.headers.get("date")
    if not header:
        return None
    return parsedate_to_datetime(header) - timedelta(seconds=1)


async def count_candidates(client: PrefectClient, since: datetime | None) -> int:
    open_n, ended_n = await asyncio.gather(
        client.count_flow_runs(flow_run_filter=_open_filter()),
        client.count_flow_runs(flow_run_filter=_ended_filter(since)),
    )
    return int(open_n) + int(ended_n)


def open_runs(client: PrefectClient, page: int = PAGE) -> AsyncIterator[list[FlowRun]]:
    async def fetch(bound: datetime | None, offset: int, limit: int) -> list[FlowRun]:
        return await client.read_flow_runs(
            flow_run_filter=_open_filter(bound),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=limit,
            offset=offset,
        )

    return keyset_pages(fetch, lambda r: r.expected_start_time, lambda r: r.id, page)


def ended_runs(
    client: PrefectClient, since: datetime | None, page: int = PAGE
) -> AsyncIterator[list[FlowRun]]:
    """Final jobs, newest end first, down to ``since`` (keyset on ``end_time`` descending)."""

    async def fetch(bound: datetime | None, offset: int, limit: int) -> list[FlowRun]:
        return await client.read_flow_runs(
            flow_run_filter=_ended_filter(since, bound),
            sort=FlowRunSort.END_TIME_DESC,
            limit=limit,
            offset=offset,
        )

    return keyset_pages(fetch, lambda r: r.end_time, lambda r: r.id, page)


async def runs_by_id(
    client: PrefectClient, ids: Sequence[str], page: int = PAGE
) -> AsyncIterator[list[FlowRun]]:
    for chunk in chunks(ids, page):
        yield await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in chunk])),
            limit=page,
        )


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def shards_of(client: PrefectClient, job_ids: Sequence[UUID]) -> dict[UUID, UUID]:
    """Shard flow run id -> job id for the jobs spread over workers (``flows/spread.py``):
    their task runs and log lines are read as the job's."""
    parents: dict[UUID, UUID] = {}
    for chunk in chunks(job_ids, SHARD_TAGS):
        seen = 0
        while True:
            rows = await _post_rows(client, "/flow_runs/filter", shards_body(chunk, seen, PAGE))
            seen += len(rows)
            for row in rows:
                job = runmeta.tag_value(row.get("tags") or [], runmeta.SHARD_TAG)
                if job:
                    parents[UUID(row["id"])] = UUID(job)
            if len(rows) < PAGE:
                break
    return parents


async def task_runs_of(client: PrefectClient, job_ids: Sequence[UUID]) -> list[TaskRun]:
    """Task runs of these jobs (their shards' as theirs), keyset-paged on
    ``expected_start_time``.

    The client's ``TaskRunFilter`` lacks the server's ``expected_start_time`` criterion,
    so this posts the filter JSON itself.
    """

    async def fetch(bound: datetime | None, offset: int, limit: int) -> list[TaskRun]:
        response = await client.request(
            "POST", "/task_runs/filter", json=task_runs_body(job_ids, bound, offset, limit)
        )
        response.raise_for_status()
        return TaskRun.model_validate_list(response.json())

    if not job_ids:
        return []
    parents = await shards_of(client, job_ids)
    job_ids = [*job_ids, *parents]
    found: list[TaskRun] = []
    async for rows in keyset_pages(fetch, lambda r: r.expected_start_time, lambda r: r.id):
        found.extend(rows)
    as_job_rows(found, parents)
    return found


async def log_pages(
    client: PrefectClient, job_ids: Sequence[UUID], since: datetime | None
) -> AsyncIterator[list[Log]]:
    """Pages of these jobs' log lines from ``since`` on (all when None), oldest first.

    A generator, so the sync can write a big job's lines as they come instead of holding
    them all in memory."""
    if not job_ids:
        return

    async def fetch(bound: datetime | None, offset: int, limit: int) -> list[Log]:
        start = max(b for b in (bound, since) if b is not None) if (bound or since) else None
        return await client.read_logs(
            log_filter=logs_filter(job_ids, start),
            sort=LogSort.TIMESTAMP_ASC,
            limit=limit,
            offset=offset,
        )

    parents = await shards_of(client, job_ids)
    job_ids = [*job_ids, *parents]
    async for rows in keyset_pages(fetch, lambda r: r.timestamp, lambda r: r.id):
        as_job_rows(rows, parents)
        yield rows


def _time_key(field: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: jobfacts.parse_time(row[field])


def _ident(row: dict[str, Any]) -> Any:
    return row["id"]


async def _post_rows(client: PrefectClient, path: Any, body: dict[str, Any]) -> list[Any]:
    response = await client.request("POST", path, json=body)
    response.raise_for_status()
    rows = response.json()
    assert isinstance(rows, list)
    return rows


async def task_runs_json(
    client: PrefectClient,
    job_ids: Sequence[UUID],
    parents: dict[UUID, UUID] | None = None,
) -> list[dict[str, Any]]:
    """Task runs of these jobs as the API's JSON (no Prefect model per row: the sync turns
    them into rows with :func:`jobfacts.step_from_json`), keyset-paged as in
    :func:`task_runs_of`. ``parents``: the jobs' shards (:func:`shards_of`) when the
    caller has them already (the sync asks once per batch), else they are read here."""

    async def fetch(bound: datetime | None, offset: int, limit: int) -> list[dict[str, Any]]:
        body = task_runs_body(job_ids, bound, offset, limit)
        return await _post_rows(client, "/task_runs/filter", body)

    if not job_ids:
        return []
    parents = _theirs(job_ids, parents) if parents is not None else await shards_of(client, job_ids)
    job_ids = [*job_ids, *parents]
    found: list[dict[str, Any]] = []
    async for rows in keyset_pages(fetch, _time_key("expected_start_time"), _ident):
        found.extend(rows)
    as_job_json(found, parents)
    return found


async def log_pages_json(
    client: PrefectClient,
    job_ids: Sequence[UUID],
    since: datetime | None,
    parents: dict[UUID, UUID] | None = None,
) -> AsyncIterator[list[dict[str, Any]]]:
    """:func:`log_pages` as the API's JSON (one Prefect model per line cost ~50 µs);
    ``parents`` as in :func:`task_runs_json`."""
    if not job_ids:
        return
    parents = _theirs(job_ids, parents) if parents is not None else await shards_of(client, job_ids)
    ids = [str(i) for i in [*job_ids, *parents]]

    async def fetch(bound: datetime | None, offset: int, limit: int) -> list[dict[str, Any]]:
        start = max(b for b in (bound, since) if b is not None) if (bound or since) else None
        criteria: dict[str, Any] = {"flow_run_id": {"any_": ids}}
        if start is not None:
            criteria["timestamp"] = {"after_": start.isoformat()}
        body = {"logs": criteria, "sort": "TIMESTAMP_ASC", "limit": limit, "offset": offset}
        return await _post_rows(client, "/logs/filter", body)

    async for rows in keyset_pages(fetch, _time_key("timestamp"), _ident):
        as_job_json(rows, parents)
        yield rows


def _theirs(job_ids: Sequence[UUID], parents: dict[UUID, UUID]) -> dict[UUID, UUID]:
    """The shards of these jobs among ``parents`` (shard -> job)."""
    wanted = {str(i) for i in job_ids}
    return {shard: job for shard, job in parents.items() if str(job) in wanted}


async def states_json(
    client: PrefectClient, job_ids: Sequence[UUID], concurrency: int = 8
) -> dict[str, list[dict[str, Any]]]:
    """:func:`states_of` as the API's JSON."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job_id: UUID) -> tuple[str, list[dict[str, Any]]]:
        async with gate:
            response = await client.request(
                "GET", "/flow_run_states/", params={"flow_run_id": str(job_id)}
            )
            response.raise_for_status()
            return str(job_id), response.json()

    return dict(await asyncio.gather(*(one(i) for i in job_ids)))


async def progress_of(client: PrefectClient, job_ids: Sequence[UUID]) -> dict[str, float | None]:
    """Each job's progress percent from its newest progress artifact."""
    progress: dict[str, float | None] = {}
    for chunk in chunks(job_ids, PAGE):
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                type=ArtifactFilterType(any_=["progress"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=list(chunk)),
            ),
            sort=ArtifactSort.UPDATED_DESC,
            limit=PAGE,
        )
        for artifact in artifacts:
            key = str(artifact.flow_run_id)
            if key not in progress:
                progress[key] = jobfacts.progress_from_artifact(artifact)
    return progress


async def states_of(
    client: PrefectClient, job_ids: Sequence[UUID], concurrency: int = 8
) -> dict[str, list[State]]:
    """Each job's state history (one request per job; Prefect has no batch endpoint)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job_id: UUID) -> tuple[str, list[State]]:
        async with gate:
            return str(job_id), await client.read_flow_run_states(job_id)

    return dict(await asyncio.gather(*(one(i) for i in job_ids)))


@dataclass(frozen=True)
class NotifyVariable:
    name: str
    updated: datetime | None
    job_id: str | None
    subscribers: list[dict[str, Any]]


def parse_notify_value(name: str, value: Any) -> NotifyVariable | None:
    """The notifier's record ``{"job_id": ..., "subscribers": [...]}`` (JSON or JSON text);
    None for a variable that is not a subscription record (the name rule is the notifier's:
    ``wsjobs-notify-<job id>``)."""
    from workspaces_jobs.notify.subscriptions import job_id_of

    job_id = job_id_of(name)
    if job_id is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    data = value if isinstance(value, dict) else {}
    subs = data.get("subscribers")
    return NotifyVariable(
        name=name,
        updated=None,
        job_id=job_id,
        subscribers=[s for s in subs if isinstance(s, dict)] if isinstance(subs, list) else [],
    )


async def notify_variables(client: PrefectClient, since: datetime | None) -> list[NotifyVariable]:
    """Subscription variables updated since ``since``, newest first.

    Variables can be sorted by ``updated`` but not filtered by it, so this reads pages
    newest-first and stops at the first one older than ``since``. Offset paging is safe
    here: a variable updated meanwhile jumps to the top (already read; the next sync
    gets it), which can only shift later rows down — read twice, de-duplicated by name.
    """
    found: dict[str, NotifyVariable] = {}
    offset = 0
    while True:
        response = await client.request(
            "POST",
            "/variables/filter",
            json={
                "variables": {"name": {"like_": NOTIFY_PREFIX}},
                "sort": "UPDATED_DESC",
                "limit": PAGE,
                "offset": offset,
            },
        )
        response.raise_for_status()
        page = Variable.model_validate_list(response.json())
        for var in page:
            updated = getattr(var, "updated", None)
            if since is not None and updated is not None and updated < since:
                return list(found.values())
            parsed = parse_notify_value(var.name, var.value)
            if parsed is not None and var.name not in found:
                found[var.name] = NotifyVariable(
                    parsed.name, updated, parsed.job_id, parsed.subscribers
                )
        if len(page) < PAGE:
            return list(found.values())
        offset += PAGE
