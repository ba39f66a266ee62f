"""Incremental, gap-free sync of the job history from the Prefect API into DuckDB.

Public surface::

    from workspaces_jobs.reporting.sync import sync_history

    result = sync_history()             # path=None: WSJOBS_HISTORY; progress=callable or None
    result.jobs_added, result.jobs_updated, result.to_dict()

One pass:

1. Take the history's sync lock (:func:`reporting.store.writer_lock`: one sync at a
   time; another waits ``WSJOBS_LOCK_TIMEOUT`` seconds, then fails with one line naming
   the holder) and open the history read-write. Readers are never locked out: each
   batch's commit is one DuckLake snapshot, seen whole or not at all.
2. Read this API's watermark (``sync_state``) and the jobs not yet settled (``sync_jobs``).
3. Note the server's clock ``T0``; list candidate jobs (:mod:`reporting.source`): open
   jobs, jobs ended since ``watermark - overlap``, unsettled jobs by id.
4. Per batch (≤ 200 jobs): skip settled jobs whose ``updated`` has not moved; fetch task
   runs, logs, progress and (for changed jobs) state histories for the whole batch; build
   rows with :mod:`workspaces_jobs.jobfacts` (the same builders ``wsjobs show`` uses);
   write them as Arrow batches in one transaction. Rows of jobs whose content did not
   change are not rewritten.
5. Sync subscription variables, then store ``watermark = T0`` — only after every batch
   has committed. Then, at most every ``store.MAINTAIN_EVERY``, compact the history's
   files and expire old snapshots (:func:`reporting.store.maintain`). An
   interrupted pass leaves the old watermark: the rerun lists the same candidates, skips
   what it already settled and upserts the rest (no gaps, no duplicates).

A job is *settled* once it is final and its end is older than the settle window (log
lines reach the API in batches after the final state), except Error by inactivity or
crash, re-read for a late window in case the still-running process completes after all.

Flows and tasks never call this; :mod:`workspaces_jobs.flows.sync` runs it as its own flow.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import duckdb
import pyarrow as pa

from workspaces_jobs import activity, jobfacts, runmeta
from workspaces_jobs.reporting import direct, source
from workspaces_jobs.reporting import rows as R
from workspaces_jobs.reporting.prune import sql_file
from workspaces_jobs.reporting.store import (
    defer_maintenance,
    history_path,
    known_error,
    maintain_if_due,
    open_store,
    say_waiting,
    snapshot,
    writer_lock,
)
from workspaces_jobs.status import ErrorReason, JobStatus, job_status

#: Re-read window below the watermark: covers commits that raced the last pass.
OVERLAP = timedelta(seconds=60)
#: A final job is re-read until its end is this old: its last log lines arrive in batches.
SETTLE = timedelta(seconds=60)
#: Error by inactivity/crash is re-read this long: the process may still complete it.
LATE_WINDOW = timedelta(hours=24)
#: A final job with a planned device × step not recorded final is re-read this long
#: (task-run states trail the flow's final state); past it, the inventory or the action
#: must have changed since the job ran, and the job is settled as it is.
STEPS_WINDOW = timedelta(hours=1)
#: Log rows held in memory before they are written (a batch of big jobs has millions).
LOG_FLUSH = 50_000
#: A batch of at least this many jobs writes Parquet files instead of inlining its rows
#: in the catalog database (store.INLINE_ROWS): inlining suits the small passes of the
#: history-sync companion (no tiny files), while a bulk pass paid ~2x the CPU per commit
#: for catalog rows that the next maintenance copies into Parquet anyway.
BULK_JOBS = 100

T = TypeVar("T")


@dataclass(frozen=True)
class SyncProgress:
    """Reported after each committed batch (and once at the start, done=0)."""

    done: int
    total: int
    added: int
    updated: int


ProgressCallback = Callable[[SyncProgress], None]


@dataclass
class SyncResult:
    path: Path
    source: str
    jobs_added: int = 0
    jobs_updated: int = 0
    jobs_unchanged: int = 0
    logs_added: int = 0
    steps_written: int = 0
    notifications: int = 0
    batches: int = 0
    previous_watermark: datetime | None = None
    watermark: datetime | None = None
    #: One line: which path the pass read (the Prefect database directly, or the API and why).
    read_path: str = ""
    seconds: float = 0.0
    api_seconds: float = 0.0
    db_seconds: float = 0.0
    added_ids: list[str] = field(default_factory=list)
    updated_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def sync_history(
    path: Path | None = None,
    *,
    progress: ProgressCallback | None = None,
    batch_size: int | None = None,
    lock_timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    full: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> SyncResult:
    """Pull everything new from the Prefect API into the history file (see module doc).

    ``clock`` decides which jobs are settled (default: the server's clock); the
    watermark is always the server's time."""
    from workspaces_jobs.server import ensure_api

    ensure_api()
    return asyncio.run(
        sync_history_async(
            path,
            progress=progress,
            batch_size=batch_size,
            lock_timeout=lock_timeout,
            on_wait=on_wait,
            full=full,
            clock=clock,
        )
    )


async def sync_history_async(
    path: Path | None = None,
    *,
    progress: ProgressCallback | None = None,
    batch_size: int | None = None,
    lock_timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    full: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> SyncResult:
    """The same, for callers already in an event loop (the sync flow).

    ``full`` re-lists every job instead of those changed since the watermark (settled jobs
    whose ``updated`` has not moved are still skipped): it catches edits to old jobs that
    change nothing the incremental pass looks at, e.g. tags edited by hand in the UI.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if batch_size is not None and not 1 <= batch_size <= source.PAGE:
        raise ValueError(f"batch size must be 1..{source.PAGE}, not {batch_size}")
    file = history_path(path)
    result = SyncResult(path=file, source=str(PREFECT_API_URL.value() or "ephemeral"))
    waited: list[str] = []

    def told(message: str) -> None:
        waited.append(message)
        (on_wait or say_waiting)(message)

    started = time.perf_counter()
    with writer_lock(path, timeout=lock_timeout, on_wait=told):
        store = open_store(path, timeout=lock_timeout, on_wait=told)
        con = store.__enter__()
        opening = time.perf_counter() - started
        try:
            choice = direct.choose(str(PREFECT_API_URL.value() or ""))
            result.read_path = choice.line
            database = direct.Database(choice.database) if choice.database else None
            if batch_size is None:  # the database has no page limit: fewer, bigger commits
                batch_size = direct.BATCH if database is not None else source.PAGE
            try:
                with _one_thread(con):
                    async with get_client() as client:
                        one = _Pass(
                            con, client, result, batch_size, progress, full, clock, database
                        )
                        await one.run()
            finally:
                if database is not None:
                    database.close()
            tidy = time.perf_counter()
            if one.fresh:
                # A history filled by this pass has few, big files (BULK_JOBS): its first
                # maintenance (~0.6 s of CPU even on an empty history) waits its turn.
                defer_maintenance(path)
            else:
                maintain_if_due(con, path)
            result.db_seconds += time.perf_counter() - tidy
        except duckdb.Error as exc:  # a full disk or a damaged catalog: say which file
            known = known_error(file, exc)
            if known is not None:
                raise known from exc
            raise
        finally:
            closing = time.perf_counter()
            store.__exit__(None, None, None)
            result.db_seconds += time.perf_counter() - closing
    result.seconds = time.perf_counter() - started
    if not waited:  # opening and migrating is database time; waiting for a lock is not
        result.db_seconds += opening
    return result


@contextmanager
def _one_thread(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Write batches on one DuckDB thread: they are small (a batch is ~10k rows), and
    measured on a busy 2-core host one thread wrote a 10-job batch 3-4x faster than the
    default thread pool. The setting is per database, so it is restored afterwards."""
    row = con.cursor().execute("SELECT current_setting('threads')").fetchone()
    con.cursor().execute("SET threads = 1")
    try:
        yield
    finally:
        con.cursor().execute(f"SET threads = {int(row[0]) if row else 1}")


class _Seen(NamedTuple):
    api_updated: datetime | None
    fingerprint: str | None
    settled: bool
    last_log_ts: datetime | None


class _Pass:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        client: Any,
        result: SyncResult,
        batch_size: int,
        progress: ProgressCallback | None,
        full: bool = False,
        clock: Callable[[], datetime] | None = None,
        database: direct.Database | None = None,
    ) -> None:
        self.con = con
        self.clock = clock
        self.db = database
        self.client = client
        self.result = result
        self.batch_size = batch_size
        self.progress = progress
        self.full = full
        self.now = datetime.now(UTC)
        self.done = 0
        self.total = 0
        self._inventory: Any = None
        self._actions: dict[str, int] | None = None
        self._writing: asyncio.Task[None] | None = None
        #: The current batch's shards (shard id -> job id), API path.
        self._parents: dict[Any, Any] = {}
        #: The pass started from an empty history: every row it writes is new (see _write).
        self.fresh = False

    # -- timing wrappers: where the time goes (issue: DB writes < 20 % of a sync) --------
    async def _api(self, awaitable: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.result.api_seconds += time.perf_counter() - start

    def _db(self, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.result.db_seconds += time.perf_counter() - start

    # -- the pass -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        finally:  # never close the history under a write still running in its thread
            if self._writing is not None and not self._writing.done():
                await asyncio.wait([self._writing])

    async def _run(self) -> None:
        previous, unsettled = self._db(self._read_state)
        self.result.previous_watermark = previous
        t0 = await self._api(source.server_time(self.client))
        # the server's clock decides "settled" (the local one only when it has none)
        self.now = self.clock() if self.clock else (t0 or datetime.now(UTC))
        since = previous - OVERLAP if previous and not self.full else None
        seen: set[str] = set()
        db = self.db
        if db is not None:
            listed = await self._api(asyncio.to_thread(db.job_runs, since))
            self.total = len(listed) + len(unsettled)
        else:
            self.total = await self._api(source.count_candidates(self.client, since))
            self.total += len(unsettled)
        self._report()

        async def candidates() -> AsyncIterator[list[Any]]:
            if db is not None:
                for chunk in source.chunks(listed, self.batch_size):
                    yield list(chunk)
                rest = [i for i in unsettled if i not in seen]
                for chunk in source.chunks(await asyncio.to_thread(db.runs_by_id, rest), 200):
                    yield list(chunk)
                return
            async for page in source.open_runs(self.client, self.batch_size):
                yield page
            async for page in source.ended_runs(self.client, since, self.batch_size):
                yield page
            rest = [i for i in unsettled if i not in seen]
            async for page in source.runs_by_id(self.client, rest, self.batch_size):
                yield page

        pages = candidates()
        while True:
            try:
                page = await self._api(anext(pages))
            except StopAsyncIteration:
                break
            runs = [
                r
                for r in page
                if str(r.id) not in seen
                and runmeta.JOB_TAG in (r.tags or [])
                and not runmeta.is_shard(r.tags)  # part of a spread job, not a job
            ]
            seen.update(str(r.id) for r in runs)
            for chunk in source.chunks(runs, self.batch_size):
                await self._batch(chunk)

        await self._written()  # every batch committed before the watermark moves
        # Deleted in Prefect: the history keeps them; an unfinished one is closed in _finish.
        gone = [i for i in unsettled if i not in seen]
        since_vars = since
        variables = await self._api(source.notify_variables(self.client, since_vars))
        watermark = t0 or previous
        self._db(lambda: self._finish(variables, gone, watermark))
        self.result.watermark = watermark

    def _report(self) -> None:
        if self.progress:
            self.progress(
                SyncProgress(
                    done=self.done,
                    total=max(self.total, self.done),
                    added=self.result.jobs_added,
                    updated=self.result.jobs_updated,
                )
            )

    # -- reading the history -------------------------------------------------------------
    def _read_state(self) -> tuple[datetime | None, list[str]]:
        with snapshot(self.con) as con:  # one catalog read for the three queries
            return self._read_state_in(con)

    def _read_state_in(self, con: duckdb.DuckDBPyConnection) -> tuple[datetime | None, list[str]]:
        cur = con.cursor()
        row = cur.execute(
            "SELECT watermark FROM sync_state WHERE source = $s", {"s": self.result.source}
        ).fetchone()
        ids = cur.execute("SELECT job_id FROM sync_jobs WHERE NOT settled ORDER BY job_id")
        unsettled = [r[0] for r in ids.fetchall()]
        held = cur.execute(
            "SELECT EXISTS (FROM jobs) OR EXISTS (FROM sync_jobs) OR EXISTS (FROM steps)"
            " OR EXISTS (FROM logs)"
        ).fetchone()
        self.fresh = not (held and held[0])
        return (row[0] if row else None), unsettled

    def _existing(self, ids: Sequence[str]) -> dict[str, _Seen]:
        if self.fresh:  # nothing synced before this pass; each job comes once per pass
            return {}
        cur = self.con.cursor()
        found = cur.execute(
            "SELECT job_id, api_updated, fingerprint, settled, last_log_ts FROM sync_jobs"
            " WHERE job_id IN (SELECT unnest($ids))",
            {"ids": list(ids)},
        ).fetchall()
        return {r[0]: _Seen(r[1], r[2], bool(r[3]), r[4]) for r in found}

    # -- one batch -------------------------------------------------------------------------
    async def _batch(self, runs: Sequence[Any]) -> None:
        existing = self._db(lambda: self._existing([str(r.id) for r in runs]))
        todo = [r for r in runs if not _unchanged(r, existing.get(str(r.id)))]
        self.result.jobs_unchanged += len(runs) - len(todo)
        if todo:
            await self._sync_jobs(todo, existing)
        self.done += len(runs)
        self.result.batches += 1
        self._report()

    async def _sync_jobs(self, runs: Sequence[Any], existing: dict[str, _Seen]) -> None:
        c = self.client
        ids = [r.id for r in runs]
        state_ids = [
            r.id
            for r in runs
            if (e := existing.get(str(r.id))) is None or e.api_updated != r.updated
        ]
        db = self.db
        if db is not None:

            def read() -> tuple[Any, Any, Any]:
                return db.task_runs(ids), db.progress(ids), db.states(state_ids)

            task_runs, progress, states = await self._api(asyncio.to_thread(read))
        else:
            self._parents = await self._api(source.shards_of(c, ids))  # once per batch
            task_runs, progress, states = await self._api(
                asyncio.gather(
                    source.task_runs_json(c, ids, self._parents),
                    source.progress_of(c, ids),
                    source.states_json(c, state_ids),
                )
            )
        steps_by_job: dict[str, list[jobfacts.StepFact]] = defaultdict(list)
        for task_run in task_runs:
            step = jobfacts.step_from_json(task_run)
            if step is not None:
                steps_by_job[step.job_id].append(step)
        logs = await self._sync_logs(runs, existing, steps_by_job)
        batch = self._build(runs, existing, steps_by_job, progress, states, logs.newest)
        batch.logs = logs.pending
        batch.steps_named = logs.steps

        def write() -> None:
            self._write(batch, logs.added)
            self._count(runs, existing, batch.changed, logs.added)

        await self._start_write(write)

    async def _start_write(self, write: Callable[[], None]) -> None:
        """Write a batch in a thread while the next one is read from the API (the two
        took turns before: reading waited on writing and writing on reading). One write
        at a time, in order; :meth:`_written` waits for the last one."""
        await self._written()
        self._writing = asyncio.create_task(asyncio.to_thread(self._db, write))

    async def _written(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def _sync_logs(
        self,
        runs: Sequence[Any],
        existing: dict[str, _Seen],
        steps_by_job: dict[str, list[jobfacts.StepFact]],
    ) -> _Logs:
        """Read the batch's new log lines page by page; write them every ``LOG_FLUSH`` rows
        (log rows are insert-only and keyed by id, so an early write is safe: a rerun
        after a failure reads them again and skips them). The rest goes with the batch."""
        steps = R.step_names(s for batch in steps_by_job.values() for s in batch)
        marks = {
            str(r.id): e.last_log_ts
            for r in runs
            if (e := existing.get(str(r.id))) and e.last_log_ts is not None
        }
        fresh = [r.id for r in runs if str(r.id) not in marks]
        known = [r.id for r in runs if str(r.id) in marks]
        known_since = min(marks.values()) - OVERLAP if marks else None
        logs = _Logs(steps=steps)
        for group, since in ((fresh, None), (known, known_since)):
            pages: AsyncIterator[pa.Table] = (
                _in_thread(self.db.logs(group, since))
                if self.db is not None
                else _tables(source.log_pages_json(self.client, group, since, self._parents))
            )
            while True:
                try:
                    page = await self._api(anext(pages))
                except StopAsyncIteration:
                    break
                logs.pending.add(page)
                if len(logs.pending) >= LOG_FLUSH:
                    full, logs.pending = logs.pending, R.LogColumns()
                    R.newest_lines(full.to_arrow(), logs.newest)
                    await self._start_write(lambda full=full: self._write_logs(full, logs))  # type: ignore[misc]
        # Once per flush, not per page: an Arrow group-by per 200-line API page took a
        # fifth of the API path's own time (profiled).
        R.newest_lines(logs.pending.to_arrow(), logs.newest)
        return logs

    def _write_logs(self, pending: R.LogColumns, logs: _Logs) -> None:
        cur = self.con.cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            added = R.insert_logs(cur, pending.to_arrow(), logs.steps, new=self.fresh)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        for job_id, count in added.items():
            logs.added[job_id] += count
        self.result.logs_added += sum(added.values())

    def _build(
        self,
        runs: Sequence[Any],
        existing: dict[str, _Seen],
        steps_by_job: dict[str, list[jobfacts.StepFact]],
        progress: dict[str, float | None],
        states: dict[str, list[Any]],
        newest_log: dict[str, datetime],
    ) -> _Batch:
        synced = datetime.now(UTC)
        batch = _Batch()
        for run in runs:
            job_id = str(run.id)
            job = jobfacts.job_from_flow_run(run, progress=progress.get(job_id))
            steps = sorted(steps_by_job.get(job_id, []), key=_step_order)
            devices = jobfacts.devices_from_steps(job_id, steps, self._planned(job))
            job.steps = steps
            mark = R.fingerprint(job, steps, devices)
            seen = existing.get(job_id)
            if seen is None or seen.fingerprint != mark:
                batch.changed.add(job_id)
                batch.jobs.append(R.job_row(job, synced))
                batch.steps.extend(R.step_row(s) for s in steps)
                batch.devices.extend(R.device_row(d) for d in devices)
            if job_id in states:
                batch.states.extend(_state_rows(job_id, states[job_id]))
            last = [t for t in (seen.last_log_ts if seen else None, newest_log.get(job_id)) if t]
            batch.sync_jobs.append(
                {
                    "job_id": job_id,
                    "api_updated": run.updated,
                    "fingerprint": mark,
                    "settled": settled_at(job, devices, self.now, self._planned_steps(job.action)),
                    "last_log_ts": max(last) if last else None,
                }
            )
        return batch

    def _write(self, batch: _Batch, added_logs: dict[str, int]) -> None:
        """One transaction per batch: all of the batch's rows or none of them."""
        cur = self.con.cursor()
        if len(batch.sync_jobs) >= BULK_JOBS:  # Parquet files, not catalog rows (see BULK_JOBS)
            cur.execute("SET SESSION ducklake_default_data_inlining_row_limit = 0")
        # A pass from an empty history inserts (its keys cannot be there: a job comes once
        # per pass and its rows commit with it); otherwise each table is upserted by key.
        put = R.insert if self.fresh else R.upsert
        cur.execute("BEGIN TRANSACTION")
        try:
            self.result.steps_written += put(cur, "steps", R.to_arrow("steps", batch.steps))
            put(cur, "job_devices", R.to_arrow("job_devices", batch.devices))
            R.write_jobs(cur, R.to_arrow("jobs", batch.jobs), replace=not self.fresh)
            put(cur, "job_states", R.to_arrow("job_states", batch.states))
            lines = batch.logs.to_arrow()
            added = R.insert_logs(cur, lines, batch.steps_named, new=self.fresh)
            put(cur, "sync_jobs", R.to_arrow("sync_jobs", batch.sync_jobs))
            scheduled = [j["id"] for j in batch.jobs if _scheduled(j["tags"])]
            activity.record_scheduled(cur, sorted(scheduled))  # #18
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        for job_id, count in added.items():
            added_logs[job_id] += count
        self.result.logs_added += sum(added.values())

    def _count(
        self,
        runs: Sequence[Any],
        existing: dict[str, _Seen],
        changed: set[str],
        added_logs: dict[str, int],
    ) -> None:
        for run in runs:
            job_id = str(run.id)
            if job_id not in existing:
                self.result.jobs_added += 1
                self.result.added_ids.append(job_id)
            elif job_id in changed or added_logs.get(job_id):
                self.result.jobs_updated += 1
                self.result.updated_ids.append(job_id)
            else:
                self.result.jobs_unchanged += 1

    def _planned_steps(self, action: str) -> int | None:
        """How many steps the YAML action ``action`` has (None: a Python action, or gone)."""
        from workspaces_jobs.catalog import CatalogError, load_actions

        if self._actions is None:  # read once per pass (each read parses every YAML file)
            try:
                self._actions = {n: len(a.steps) for n, a in load_actions().items()}
            except CatalogError:
                self._actions = {}
        return self._actions.get(action)

    def _planned(self, job: jobfacts.JobFact) -> list[str]:
        """Devices the job targets (so a device with no step yet shows as Pending), as
        ``wsjobs show`` does; an inventory that changed since falls back to what ran."""
        from workspaces_jobs.catalog import CatalogError, load_inventory

        try:
            if self._inventory is None:
                self._inventory = load_inventory()
            return [d.name for d in self._inventory.resolve(job.parameters.get("target") or [])]
        except CatalogError:
            return []

    # -- end of the pass ----------------------------------------------------------------
    def _finish(
        self, variables: Sequence[source.NotifyVariable], gone: Sequence[str], watermark: Any
    ) -> None:
        rows = [row for var in variables for row in _notification_rows(var)]
        job_ids = sorted({var.job_id for var in variables if var.job_id})
        cur = self.con.cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            if job_ids:
                cur.execute(
                    "DELETE FROM notifications WHERE job_id IN (SELECT unnest($ids))",
                    {"ids": job_ids},
                )
                R.upsert(cur, "notifications", R.to_arrow("notifications", rows))
            if gone:
                # Deleted in Prefect before a final status: close them with one that says so.
                for name in ("mark_deleted.sql", "mark_deleted_devices.sql"):
                    cur.execute(sql_file(name), {"ids": list(gone), "now": self.now})
                cur.execute(
                    "UPDATE sync_jobs SET settled = true WHERE job_id IN (SELECT unnest($ids))",
                    {"ids": list(gone)},
                )
                # A run deleted before it ever started (a schedule paused or deleted, which
                # removes its future runs) was never a job that ran: drop its Pending row,
                # or the list would show it as upcoming forever. Jobs that ran are kept.
                cur.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT unnest($ids)) AND started IS NULL"
                    f" AND status = '{JobStatus.PENDING.value}'",
                    {"ids": list(gone)},
                )
            cur.execute("DELETE FROM sync_state WHERE source = $s", {"s": self.result.source})
            cur.execute(
                "INSERT INTO sync_state BY NAME SELECT $source AS source,"
                " $watermark::TIMESTAMPTZ AS watermark, $started::TIMESTAMPTZ AS last_started,"
                " now() AS last_finished, $added AS jobs_added, $updated AS jobs_updated,"
                " $logs AS logs_added",
                {
                    "source": self.result.source,
                    "watermark": watermark,
                    "started": self.now,
                    "added": self.result.jobs_added,
                    "updated": self.result.jobs_updated,
                    "logs": self.result.logs_added,
                },
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self.result.notifications = len(rows)


@dataclass
class _Logs:
    steps: pa.Table  # the batch's step names, for lines without tags (R.insert_logs)
    pending: R.LogColumns = field(default_factory=R.LogColumns)
    newest: dict[str, datetime] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class _Batch:
    jobs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    logs: R.LogColumns = field(default_factory=R.LogColumns)
    steps_named: pa.Table = field(default_factory=lambda: R.step_names([]))
    sync_jobs: list[dict[str, Any]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)


def settled_at(
    job: jobfacts.JobFact,
    devices: Sequence[jobfacts.DeviceFact],
    now: datetime,
    planned_steps: int | None = None,
) -> bool:
    """Nothing about the job can change any more, so the sync stops re-reading it.

    Final, its end older than :data:`SETTLE` (its last log lines have arrived), and every
    planned device × step recorded final (:func:`jobfacts.steps_recorded`; a big job's
    task-run states trail its final state) — or, failing that, ended over
    :data:`STEPS_WINDOW` ago. Error by inactivity or crash waits :data:`LATE_WINDOW`: the
    process may still complete it.
    """
    status = JobStatus(job.status)
    ended = job.ended or job.updated
    if not status.is_final or ended is None:
        return False
    age = now - ended
    if status == JobStatus.ERROR and job.reason in (
        ErrorReason.INACTIVITY.value,
        ErrorReason.CRASHED.value,
    ):
        return age > LATE_WINDOW
    if age <= SETTLE:
        return False
    return age > STEPS_WINDOW or jobfacts.steps_recorded(job, devices, planned_steps)


async def _tables(pages: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[pa.Table]:
    """The API's pages of log JSON as :data:`reporting.rows.RAW_LOGS` tables."""
    async for page in pages:
        yield R.raw_logs_from_json(page)


async def _in_thread(pages: Iterator[T]) -> AsyncIterator[T]:
    """Pages of a blocking reader, each read in a thread (the event loop keeps serving
    the batch being written meanwhile)."""
    done = object()
    while (page := await asyncio.to_thread(next, pages, done)) is not done:
        yield page  # type: ignore[misc]


def _scheduled(tags: Sequence[str] | None) -> bool:
    """A schedule created the job (its ``run`` activity row is written with it, #18)."""
    return any(t.startswith(runmeta.SCHEDULE_TAG) for t in tags or ())


def _unchanged(run: Any, seen: _Seen | None) -> bool:
    """Settled and not touched in Prefect since: nothing to read."""
    return seen is not None and seen.settled and seen.api_updated == run.updated


def _state_rows(job_id: str, states: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A job's state history (the API's JSON) as ``job_states`` rows, oldest first."""
    rows = []
    started = False
    for state in sorted(states, key=lambda s: jobfacts.parse_time(s["timestamp"]) or _EPOCH):
        kind = state["type"]
        started = started or kind == "RUNNING"
        mapped = job_status(kind, state.get("name"), started=started)
        rows.append(
            {
                "id": state["id"],
                "job_id": job_id,
                "ts": jobfacts.parse_time(state["timestamp"]),
                "state_type": kind,
                "state_name": state.get("name"),
                "status": mapped.status.value,
                "message": state.get("message"),
            }
        )
    return rows


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _notification_rows(var: source.NotifyVariable) -> list[dict[str, Any]]:
    rows = []
    for sub in var.subscribers:
        email = sub.get("email")
        if not var.job_id or not isinstance(email, str) or not email:
            continue
        attempts = sub.get("attempts")
        rows.append(
            {
                "job_id": var.job_id,
                "email": email,
                "status": str(sub.get("status") or "pending"),
                "attempts": attempts if isinstance(attempts, int) else 0,
                "last_error": sub.get("last_error"),
                "sent_at": _when(sub.get("sent_at")),
                "subscribed_at": _when(sub.get("subscribed_at")),
                "subscribed_by": sub.get("subscribed_by"),
                "recovery_status": sub.get("recovery_status"),
                "recovery_sent_at": _when(sub.get("recovery_sent_at")),
            }
        )
    return rows


def _step_order(step: jobfacts.StepFact) -> tuple[str, int, str]:
    """Device, then position (steps that never ran have none yet: last)."""
    return step.device, step.position if step.position is not None else 1 << 30, step.step
