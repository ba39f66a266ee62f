"""The in-process delivery path: email subscribers when the job's own process sees it end.

:func:`notify_on_final_status` is one of the job flows'
:data:`~workspaces_jobs.flows.hooks.FINAL_STATUS_LISTENERS` (the hooks module lists it, so
every process that can run the hook notifies: a job, ``wsjobs cancel``, the watchdog).
The hook machinery already swallows listener errors; we also catch our own so a broken
mail server is a log line in the job, never a new status.
Jobs that end without a hook (canceled while Pending, killed process) are covered by
:func:`~workspaces_jobs.notify.deliver.deliver_owed`.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.logging import get_logger
from prefect.logging.loggers import flow_run_logger
from prefect.states import State

from workspaces_jobs.status import MappedStatus

logger = get_logger(__name__)


def notify_on_final_status(flow_run: FlowRun, state: State[Any], mapped: MappedStatus) -> None:
    """Send the owed emails for this job; record, never raise."""
    try:
        from prefect.logging.handlers import APILogHandler

        from workspaces_jobs.notify.deliver import deliver_job

        # The job's last lines (a failed step's output) may still sit in this process's
        # log batch: send them first, so the email can quote them.
        APILogHandler().flush()
        deliver_job(str(flow_run.id), via="hook", logger=flow_run_logger(flow_run), final=mapped)
    except Exception:
        logger.exception(f"Notify: delivery for job {flow_run.id} failed; the job is unchanged")
