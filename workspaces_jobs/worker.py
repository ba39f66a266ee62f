"""``wsjobs worker``: the worker that runs schedules and later jobs, and names their runs.

It is Prefect's process worker polling the job pool (``WSJOBS_WORK_POOL``, queue
``WSJOBS_WORK_QUEUE``; the pool is created as a process pool if missing), plus one small
loop: Prefect's scheduler pre-creates the runs of a schedule with random names
("coral-curassow"), so every :data:`NAME_EVERY` seconds the loop renames the Pending job
runs of deployments to ``action: info`` (:func:`workspaces_jobs.runmeta.job_name`), the
name ``wsjobs run`` gives. (A run is also named when it starts, by the flow itself.)
The worker writes nothing to the history: the activity row of a scheduled run is written
by the history sync from the run's ``schedule:`` tag (:func:`activity.record_scheduled`).

On the embedded default the managed local server starts it as a companion; with
``PREFECT_API_URL`` set, run it on each host that should run jobs (instead of
``prefect worker start``). Polling every :data:`POLL_SECONDS` seconds with
:data:`PREFETCH_SECONDS` of look-ahead starts a run's process before it is due, so its
imports are done by then; the server holds it until its time (never early).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from workspaces_jobs import runmeta
from workspaces_jobs.settings import get_settings

#: Seconds between the worker's polls for due runs (Prefect's default is 10).
POLL_SECONDS = 3
#: Seconds ahead a due run's process is started. Importing Prefect and the flow takes
#: seconds (10-20 s on a loaded 2-core host, measured), and the server never lets a run go
#: Running before its scheduled time (Prefect's ``WaitForScheduledTime`` rule: the process
#: waits), so starting early makes the job start on time, never before it.
PREFETCH_SECONDS = 20
#: Seconds between two naming sweeps.
NAME_EVERY = 5.0
#: Runs renamed per sweep at most (the next sweep does the rest).
NAME_BATCH = 200


async def name_pending_runs(client: Any) -> int:
    """Rename Pending job runs of deployments that do not carry their job name yet."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[runmeta.JOB_TAG]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
            deployment_id=FlowRunFilterDeploymentId(is_null_=False),
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=NAME_BATCH,
    )
    renamed = 0
    for run in runs:
        action = runmeta.tag_value(run.tags or [], runmeta.ACTION_TAG)
        if not action:
            continue
        wanted = runmeta.job_name(action, str((run.parameters or {}).get("info") or ""))
        if run.name != wanted:
            await client.update_flow_run(run.id, name=wanted)
            renamed += 1
    return renamed


async def _namer(every: float) -> None:
    from prefect.client.orchestration import get_client
    from prefect.logging import get_logger

    log = get_logger("workspaces_jobs.worker")
    while True:
        try:
            async with get_client() as client:
                n = await name_pending_runs(client)
            if n:
                log.info("named %d scheduled job run(s)", n)
        except Exception as exc:  # the API may be restarting: try again next time
            log.warning("naming scheduled runs failed: %s", exc)
        await asyncio.sleep(every)


async def serve(*, name: str | None = None) -> None:
    """Run the worker and the naming loop until cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.workers.process import ProcessWorker

    from workspaces_jobs.schedules import ensure_pool

    settings = get_settings()
    with get_client(sync_client=True) as client:
        ensure_pool(client, settings.work_pool)
    namer = asyncio.create_task(_namer(NAME_EVERY))
    try:
        async with ProcessWorker(
            work_pool_name=settings.work_pool,
            work_queues=[settings.work_queue],
            name=name,
            prefetch_seconds=PREFETCH_SECONDS,
        ) as worker:
            await worker.start()
    finally:
        namer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await namer


def worker_env() -> dict[str, str]:
    """Environment settings the worker needs before Prefect reads its settings."""
    return {"PREFECT_WORKER_QUERY_SECONDS": str(POLL_SECONDS)}


def run(*, name: str | None = None) -> None:
    """Foreground entry point of ``wsjobs worker`` (blocks; Ctrl-C or SIGTERM stops it)."""
    for key, value in worker_env().items():
        os.environ.setdefault(key, value)
    from workspaces_jobs.server import ensure_api

    ensure_api()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(name=name))
