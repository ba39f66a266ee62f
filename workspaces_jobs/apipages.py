"""Read every task run and log line of some jobs from the Prefect API, page by page.

The server answers at most one page (``PREFECT_SERVER_API_DEFAULT_LIMIT``, 200 rows) per
request, so a reader that asks once sees the first 200 steps of a 500-device job and
shows the other devices as Pending. Every reader of a job's steps and lines (``wsjobs
show``, the web detail view, the notify email, the history sync) pages with the one
rule here: a **keyset** on the column the rows are sorted by, never a bare offset (a
row that moves while we page would be skipped or read twice). Rows at a page boundary
come again on the next page and are dropped by id; only when more rows than a page
share one key value does paging use an offset *within that value*.

A job spread over workers (``flows/spread.py``) has its steps and lines in its shards'
flow runs (tagged ``shard-of:<job id>``): :func:`task_runs` and :func:`logs` read those
too and give them the job's id, so every view shows one job.

Task runs are keyed on ``expected_start_time`` (the client's ``TaskRunFilter`` lacks the
server's criterion, so the filter JSON is posted as is); log lines on ``timestamp``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

if TYPE_CHECKING:  # Prefect is imported where it is used: httpx-only readers share this
    from prefect.client.schemas.filters import LogFilter
    from prefect.client.schemas.objects import Log, TaskRun

from workspaces_jobs.runmeta import SHARD_TAG

#: The server's largest page (``PREFECT_SERVER_API_DEFAULT_LIMIT``).
PAGE = 200

T = TypeVar("T")


class Keyset(Generic[T]):
    """Where the next page starts: ``bound`` (key value, None = start) and ``offset``.

    Feed each page to :meth:`take`; it returns the rows not seen yet and sets ``done``
    after a short page. Sync and async readers share it, so the rule lives once.
    """

    def __init__(
        self, key: Callable[[T], Any], ident: Callable[[T], Hashable], page: int = PAGE
    ) -> None:
        self.key, self.ident, self.page = key, ident, page
        self.bound: Any = None
        self.offset = 0
        self.done = False
        self._at_bound: set[Hashable] = set()

    def take(self, rows: Sequence[T]) -> list[T]:
        fresh = [r for r in rows if self.ident(r) not in self._at_bound]
        if len(rows) < self.page:
            self.done = True
            return fresh
        last = self.key(rows[-1])
        if self.bound is not None and last == self.bound:  # a whole page of ties
            self.offset += self.page
        else:
            self.offset = 0
            self._at_bound = set()
        self.bound = last
        self._at_bound |= {self.ident(r) for r in rows if self.key(r) == last}
        return fresh


def keyset_pages(
    fetch: Callable[[Any, int, int], Sequence[T]],
    key: Callable[[T], Any],
    ident: Callable[[T], Hashable],
    page: int = PAGE,
) -> Iterator[list[T]]:
    """Pages of an ordered result; ``fetch(bound, offset, limit)`` returns up to ``limit``
    rows whose key is at or past ``bound`` in key order, skipping ``offset`` rows."""
    cursor: Keyset[T] = Keyset(key, ident, page)
    while not cursor.done:
        fresh = cursor.take(fetch(cursor.bound, cursor.offset, page))
        if fresh:
            yield fresh


def task_runs_body(
    job_ids: Sequence[UUID], bound: datetime | None, offset: int, limit: int
) -> dict[str, Any]:
    """The ``POST /task_runs/filter`` body for one keyset page of these jobs' task runs."""
    criteria: dict[str, Any] = {"flow_run_id": {"any_": [str(i) for i in job_ids]}}
    if bound is not None:
        criteria["expected_start_time"] = {"after_": bound.isoformat()}
    return {
        "task_runs": criteria,
        "sort": "EXPECTED_START_TIME_ASC",  # TaskRunSort.EXPECTED_START_TIME_ASC
        "limit": limit,
        "offset": offset,
    }


def logs_filter(job_ids: Sequence[UUID], start: datetime | None) -> LogFilter:
    """These jobs' log lines at or after ``start`` (all when None)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp

    return LogFilter(
        flow_run_id=LogFilterFlowRunId(any_=list(job_ids)),
        timestamp=LogFilterTimestamp(after_=start) if start else None,  # type: ignore[arg-type]
    )


def _task_run_key(run: TaskRun) -> Any:
    return run.expected_start_time


def _log_key(log: Log) -> Any:
    return log.timestamp


def shards_body(job_ids: Sequence[UUID], offset: int, limit: int) -> dict[str, Any]:
    """The ``POST /flow_runs/filter`` body for the shards of these jobs (a job has few:
    devices / shard size, so a plain offset over a stable sort is enough)."""
    return {
        "flow_runs": {"tags": {"any_": [f"{SHARD_TAG}{i}" for i in job_ids]}},
        "sort": "ID_DESC",
        "limit": limit,
        "offset": offset,
    }


def shard_parents(shards: Sequence[dict[str, Any]]) -> dict[UUID, UUID]:
    """Shard flow run id -> its job's id, from the shards' tags (flow runs as JSON)."""
    out: dict[UUID, UUID] = {}
    for shard in shards:
        for tag in shard.get("tags") or []:
            if tag.startswith(SHARD_TAG):
                out[UUID(str(shard["id"]))] = UUID(tag[len(SHARD_TAG) :])
    return out


def shards_of(client: Any, job_ids: Sequence[UUID], page: int = PAGE) -> list[dict[str, Any]]:
    """The shard flow runs of these jobs as the API's JSON (none for a job not spread)."""
    found: list[dict[str, Any]] = []
    while job_ids:
        response = client.request(
            "POST", "/flow_runs/filter", json=shards_body(job_ids, len(found), page)
        )
        response.raise_for_status()
        rows = list(response.json())
        found.extend(rows)
        if len(rows) < page:
            break
    return found


def as_job_rows(rows: Sequence[Any], parents: dict[UUID, UUID]) -> None:
    """Give task runs / log lines of shards their job's id (in place)."""
    if parents:
        for row in rows:
            job = parents.get(row.flow_run_id)
            if job is not None:
                row.flow_run_id = job


def as_job_json(rows: Sequence[dict[str, Any]], parents: dict[UUID, UUID]) -> None:
    """:func:`as_job_rows` for rows read as the API's JSON."""
    if parents:
        by_text = {str(shard): str(job) for shard, job in parents.items()}
        for row in rows:
            job = by_text.get(str(row.get("flow_run_id")))
            if job is not None:
                row["flow_run_id"] = job


def task_runs(
    client: Any, job_ids: Sequence[UUID], page: int = PAGE, *, expand_shards: bool = True
) -> list[TaskRun]:
    """Every task run of these jobs, their shards' included (a sync Prefect client)."""
    if not job_ids:
        return []
    parents = shard_parents(shards_of(client, job_ids)) if expand_shards else {}
    job_ids = [*job_ids, *parents]

    from prefect.client.schemas.objects import TaskRun

    def fetch(bound: datetime | None, offset: int, limit: int) -> list[TaskRun]:
        response = client.request(
            "POST", "/task_runs/filter", json=task_runs_body(job_ids, bound, offset, limit)
        )
        response.raise_for_status()
        return TaskRun.model_validate_list(response.json())

    found: list[TaskRun] = []
    for rows in keyset_pages(fetch, _task_run_key, lambda r: r.id, page):
        found.extend(rows)
    as_job_rows(found, parents)
    return found


def logs(
    client: Any, job_ids: Sequence[UUID], since: datetime | None = None, page: int = PAGE
) -> Iterator[list[Log]]:
    """Pages of these jobs' log lines from ``since`` on, oldest first (a sync client),
    their shards' included."""
    if not job_ids:
        return
    parents = shard_parents(shards_of(client, job_ids))
    job_ids = [*job_ids, *parents]

    from prefect.client.schemas.sorting import LogSort

    def fetch(bound: datetime | None, offset: int, limit: int) -> list[Log]:
        start = max(b for b in (bound, since) if b is not None) if (bound or since) else None
        return list(
            client.read_logs(
                log_filter=logs_filter(job_ids, start),
                sort=LogSort.TIMESTAMP_ASC,
                limit=limit,
                offset=offset,
            )
        )

    for rows in keyset_pages(fetch, _log_key, lambda r: r.id, page):
        as_job_rows(rows, parents)
        yield rows


def iter_variables(client: Any, prefix: str) -> Iterator[dict[str, Any]]:
    """Every Prefect Variable whose name starts with ``prefix`` (as JSON), page by page.

    Variables can only be filtered by a name *substring* (``like_``), so names are checked
    for the prefix here. They are sorted by name and the filter has no "name after", so
    this pages by offset: a variable created meanwhile with a smaller name shifts later
    rows down by one (read twice: callers key by name), and one deleted meanwhile may be
    missed until the next read — acceptable for notification bookkeeping, which re-reads.
    """
    offset = 0
    while True:
        response = client.request(
            "POST",
            "/variables/filter",
            json={
                "variables": {"name": {"like_": prefix}},
                "sort": "NAME_ASC",
                "limit": PAGE,
                "offset": offset,
            },
        )
        response.raise_for_status()
        batch = response.json()
        yield from (item for item in batch if str(item.get("name", "")).startswith(prefix))
        if len(batch) < PAGE:
            return
        offset += PAGE
