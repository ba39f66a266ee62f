"""State hooks: record the job's mapped status as a log line and a Prefect event.

Hooks run inside the flow-run process; they are for telling (a log line the user reads
in the job's logs, an event ``workspaces.job.<status>`` automations can react to), never
for deciding the outcome: any error in a hook is logged and swallowed, so a broken hook
cannot change how a job ends. Extra per-status work (notifications) registers through
:data:`FINAL_STATUS_LISTENERS` instead of editing this file.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import LogCreate
from prefect.client.schemas.objects import FlowRun
from prefect.events import emit_event
from prefect.logging import get_logger
from prefect.logging.loggers import flow_run_logger
from prefect.states import State

from workspaces_jobs.notify.listener import notify_on_final_status
from workspaces_jobs.runmeta import ACTION_TAG, OWNER_TAG, is_shard, tag_value
from workspaces_jobs.status import JobStatus, MappedStatus, job_status

logger = get_logger(__name__)

#: Called as ``listener(flow_run, state, mapped)`` when a job reaches a final status. The
#: built-in one (notifications) is listed here, so every process that can run this hook (a
#: job, `wsjobs cancel`, the watchdog) notifies too; others may append theirs.
FINAL_STATUS_LISTENERS: list[Callable[[FlowRun, State[Any], MappedStatus], None]] = [
    notify_on_final_status
]


def record_status(flow: Any, flow_run: FlowRun, state: State[Any]) -> None:
    """The one hook attached to every job flow for every state change it observes."""
    if is_shard(flow_run.tags):
        return  # a shard is part of a spread job: the job itself tells its status
    try:
        # Hooks only run in a process that executes the job, so it has started.
        mapped = job_status(state.type.value, state.name, started=True)
        if state.is_cancelling():
            # on_cancellation fires on Cancelling, the last state a hook sees: Prefect
            # then forces Cancelled without hooks. This is the job's final status.
            mapped = MappedStatus(JobStatus.CANCELED)
        action = tag_value(flow_run.tags, ACTION_TAG) or flow.name
        owner = tag_value(flow_run.tags, OWNER_TAG) or ""
        reason = f" ({mapped.reason.value})" if mapped.reason else ""
        detail = f": {state.message}" if state.message else ""
        flow_run_logger(flow_run, flow).info(f"Job status: {mapped.status.value}{reason}{detail}")
        emit_event(
            event=f"workspaces.job.{mapped.status.slug}",
            resource={
                "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                "prefect.resource.name": flow_run.name,
            },
            payload={
                "job_id": str(flow_run.id),
                "action": action,
                "owner": owner,
                "status": mapped.status.value,
                "reason": mapped.reason.value if mapped.reason else None,
                "message": state.message,
            },
        )
        if mapped.status.is_final:
            for listener in FINAL_STATUS_LISTENERS:
                try:
                    listener(flow_run, state, mapped)
                except Exception:
                    logger.exception("a job status listener failed; the job's outcome is unchanged")
    except Exception:
        logger.exception("recording the job status failed; the job's outcome is unchanged")


HOOKS: dict[str, list[Callable[..., None]]] = {
    "on_running": [record_status],
    "on_completion": [record_status],
    "on_failure": [record_status],
    "on_cancellation": [record_status],
    "on_crashed": [record_status],
}


def write_job_log(
    client: SyncPrefectClient, flow_run_id: UUID, message: str, *, level: int = 20
) -> None:
    """One line in the job's logs, written at once (not through the batching handler)."""
    client.create_logs(
        [
            LogCreate(
                name="workspaces_jobs.lifecycle",  # the logger name these lines always had
                level=level,
                message=message,
                timestamp=datetime.now(UTC),  # type: ignore[arg-type]
                flow_run_id=flow_run_id,
                task_run_id=None,
            )
        ]
    )


def record_outside(client: SyncPrefectClient, flow_run_id: UUID, state: State[Any]) -> None:
    """Run the job status hook for a final state set from outside the job's process.

    A job canceled while Pending or marked by the watchdog has no process that would
    run its hooks, so the code that decided does it: the "Job status: ..." log line, the
    ``workspaces.job.<status>`` event and the final-status listeners (notifications).
    """
    from prefect.logging.handlers import APILogHandler

    flow_run = client.read_flow_run(flow_run_id)
    action = tag_value(flow_run.tags, ACTION_TAG) or ""
    record_status(SimpleNamespace(name=action), flow_run, state)
    APILogHandler().flush()
