"""The history sync as a Prefect flow, so it can be deployed on a schedule.

``prefect.yaml`` entrypoint: ``flows/sync.py:sync_history_flow``. The flow is the only
flow that touches the DuckDB file, and it does so through the same code as
``wsjobs sync`` (:func:`workspaces_jobs.reporting.sync.sync_history_async`): job flows
and step tasks never open the file. It is deliberately *not* tagged ``workspaces``, so
the sync never syncs its own runs into the job history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger


@flow(name="wsjobs-sync-history", log_prints=False)
async def sync_history_flow(path: str | None = None) -> dict[str, Any]:
    """Pull new and changed jobs from this Prefect API into the history file."""
    from workspaces_jobs.reporting.sync import sync_history_async

    logger = get_run_logger()
    result = await sync_history_async(Path(path) if path else None, on_wait=logger.warning)
    logger.info(
        "history %s: %d job(s) added, %d updated, %d log line(s) added in %.2f s",
        result.path,
        result.jobs_added,
        result.jobs_updated,
        result.logs_added,
        result.seconds,
    )
    summary = result.to_dict()
    summary.pop("added_ids")
    summary.pop("updated_ids")
    return summary
