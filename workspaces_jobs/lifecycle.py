"""Cancel, kill and rerun jobs through the Prefect API (the CLI is a thin layer over this).

Everything goes through the API, so it works from any machine and for jobs no process
has picked up yet:

* :func:`cancel_job` — only while the job is **Pending**. It proposes Cancelling: the
  server turns a Scheduled run without infrastructure straight into Cancelled (one
  atomic transition, so an executor that starts a moment later is refused), and a run an
  executor has just claimed (Prefect Pending) stays Cancelling, from which the server
  refuses Running; that executor then ends it Cancelled. Nothing runs a hook for a job
  that never started, so this code records the canceler and the status itself. A spread
  job is Pending while its shards wait for workers (``flows/spread.py``): its shards are
  canceled too, and its worker stops its waiting process.
* :func:`kill_job` — only while the job is **In progress**: Cancelling, which the
  executor's kill watcher (or a Prefect worker, for deployment runs) turns into stopped
  step processes, the ``on_cancellation`` hook and Cancelled.
* :func:`rerun_job` — a new job with the same action, parameters and info, on the same
  target or only on the devices that did not succeed; it records ``rerun-of:<id>``.

The canceler is the ``canceled-by:<name>`` tag (``runmeta.CANCELED_BY_TAG``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelling

from workspaces_jobs import activity, jobfacts, runmeta
from workspaces_jobs.errors import BadInput
from workspaces_jobs.flows.hooks import record_outside, write_job_log
from workspaces_jobs.gateway import read_flow_run, resolve_job_id
from workspaces_jobs.jobs import read_job, submit_job
from workspaces_jobs.server import ensure_api
from workspaces_jobs.status import WAITING_FOR_WORKERS_STATE_NAME, JobStatus

#: Seconds ``cancel`` waits for a just-claimed run to reach Cancelled.
CANCEL_SETTLE = 10.0
#: Seconds ``kill`` waits for the job's process to stop its steps and end Cancelled.
KILL_WAIT = 30.0


class LifecycleError(BadInput):
    """A lifecycle request that does not apply to the job's status (one-line message)."""


@dataclass(frozen=True)
class LifecycleResult:
    job_id: str
    status: str  # the job status after the request
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.job_id, "status": self.status, "message": self.message}


@dataclass(frozen=True)
class RerunResult:
    job_id: str
    rerun_of: str
    action: str
    target: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "rerun_of": self.rerun_of,
            "action": self.action,
            "target": self.target,
        }


def _status_text(job: jobfacts.JobFact) -> str:
    return f"{job.status} ({job.reason})" if job.reason else job.status


def _set_canceler(client: SyncPrefectClient, flow_run: FlowRun, by: str) -> list[str]:
    """Tag the run ``canceled-by:<by>`` (replacing an earlier one); return the old tags."""
    old = list(flow_run.tags or [])
    tags = [t for t in old if not t.startswith(runmeta.CANCELED_BY_TAG)]
    client.update_flow_run(flow_run.id, tags=[*tags, f"{runmeta.CANCELED_BY_TAG}{by}"])
    return old


def _wait_final(client: SyncPrefectClient, job_id: UUID, seconds: float) -> FlowRun:
    deadline = time.monotonic() + seconds
    while True:
        flow_run = client.read_flow_run(job_id)
        if (flow_run.state and flow_run.state.is_final()) or time.monotonic() > deadline:
            return flow_run
        time.sleep(0.2)


def job_owner(job_id: str) -> str:
    """Who launched a job (its ``owner:`` tag), read from the API; roles decide on it."""
    ensure_api()
    job_id = resolve_job_id(job_id)
    with get_client(sync_client=True) as client:
        return jobfacts.job_from_flow_run(read_flow_run(client, job_id)).owner


def cancel_job(
    job_id: str,
    *,
    by: str | None = None,
    settle: float = CANCEL_SETTLE,
    who: str | None = None,
    source: str | None = None,
) -> LifecycleResult:
    """Cancel a Pending job; raise :class:`LifecycleError` naming any other status.

    ``by`` is recorded on the job as its canceler; ``who``/``source`` (default: the
    context's actor, else ``by``, else the OS user) go to the activity log."""
    ensure_api()
    job_id = resolve_job_id(job_id)
    who, source = activity.actor(who or _context_or(by), source)
    by = by or who
    result = _cancel(job_id, by, settle)
    _record(who, "cancel", job_id, source, result.message, by)
    return result


def _context_or(by: str | None) -> str | None:
    """The actor when none is given: the context's (a web/API request), else ``by``."""
    return activity.context_who() or by


def _record(who: str, action: str, job_id: str, source: str, message: str, by: str) -> None:
    detail = message if by == who else f"{message} (as {by})"
    activity.record(who, action, job_id=job_id, source=source, detail=detail)


def _cancel(job_id: str, by: str, settle: float) -> LifecycleResult:
    with get_client(sync_client=True) as client:
        flow_run = read_flow_run(client, job_id)
        job = jobfacts.job_from_flow_run(flow_run)
        if job.status != JobStatus.PENDING.value:
            hint = " (stop it with `wsjobs kill`)" if job.status == JobStatus.IN_PROGRESS else ""
            raise LifecycleError(
                f"job {job_id} is {_status_text(job)}: only a Pending job can be canceled{hint}"
            )
        waiting = flow_run.state is not None and (
            flow_run.state.name == WAITING_FOR_WORKERS_STATE_NAME
        )
        old_tags = _set_canceler(client, flow_run, by)
        result: Any = client.set_flow_run_state(
            flow_run.id, Cancelling(message=f"Canceled by {by} while Pending.")
        )
        if result.state is None or result.state.type not in (
            StateType.CANCELLED,
            StateType.CANCELLING,
        ):
            client.update_flow_run(flow_run.id, tags=old_tags)
            now = jobfacts.job_from_flow_run(client.read_flow_run(flow_run.id))
            raise LifecycleError(f"job {job_id} is {_status_text(now)}: it could not be canceled")
        if waiting:
            # A spread job waiting for workers: shards exist, none of them ran yet (its
            # process, stopped by its worker, also stops any shard it starts meanwhile).
            from workspaces_jobs.flows.spread import cancel_shards  # a spread job's kill only

            message = f"The job was canceled by {by} while Pending."
            told = cancel_shards(client, job_id, message=message)
            write_job_log(
                client,
                flow_run.id,
                f"Job canceled by {by} while Pending (waiting for workers); {told} shard(s) "
                "that had not run were canceled with it.",
            )
            flow_run = _wait_final(client, flow_run.id, settle)
        elif result.state.type == StateType.CANCELLED:
            # Scheduled: Cancelled at once, and no process will ever run its hooks.
            write_job_log(client, flow_run.id, f"Job canceled by {by} while Pending; it never ran.")
            record_outside(client, flow_run.id, result.state)
            flow_run = client.read_flow_run(flow_run.id)
        else:
            # Claimed by an executor (or, in a race, just started): Cancelling. Its
            # process refuses to start, or stops its steps, runs the on_cancellation
            # hook and ends the run Cancelled.
            flow_run = _wait_final(client, flow_run.id, settle)
            how = "as it started; its steps were stopped" if flow_run.run_count else "while Pending"
            write_job_log(client, flow_run.id, f"Job canceled by {by} {how}.")
        after = jobfacts.job_from_flow_run(flow_run)
    if after.status == JobStatus.CANCELED.value:
        return LifecycleResult(job_id, after.status, f"canceled by {by}")
    return LifecycleResult(
        job_id, after.status, f"cancel requested by {by}; its executor is stopping it"
    )


def kill_job(
    job_id: str,
    *,
    by: str | None = None,
    wait: float = KILL_WAIT,
    who: str | None = None,
    source: str | None = None,
) -> LifecycleResult:
    """Stop an In progress job: its step processes end and it ends Canceled by the user."""
    ensure_api()
    job_id = resolve_job_id(job_id)
    who, source = activity.actor(who or _context_or(by), source)
    by = by or who
    result = _kill(job_id, by, wait)
    _record(who, "kill", job_id, source, result.message, by)
    return result


def _kill(job_id: str, by: str, wait: float) -> LifecycleResult:
    with get_client(sync_client=True) as client:
        flow_run = read_flow_run(client, job_id)
        job = jobfacts.job_from_flow_run(flow_run)
        if job.status != JobStatus.IN_PROGRESS.value:
            hint = " (use `wsjobs cancel`)" if job.status == JobStatus.PENDING else ""
            raise LifecycleError(
                f"job {job_id} is {_status_text(job)}: only an In progress job can be killed{hint}"
            )
        already = flow_run.state is not None and flow_run.state.type == StateType.CANCELLING
        old_tags = _set_canceler(client, flow_run, by)
        if not already:
            result: Any = client.set_flow_run_state(
                flow_run.id, Cancelling(message=f"Killed by {by}.")
            )
            if result.status.value != "ACCEPT":
                client.update_flow_run(flow_run.id, tags=old_tags)
                now = jobfacts.job_from_flow_run(client.read_flow_run(flow_run.id))
                raise LifecycleError(f"job {job_id} is {_status_text(now)}: it could not be killed")
        # A spread job's shards stop with it; told here too in case its process is gone.
        from workspaces_jobs.flows.spread import cancel_shards  # a spread job's kill only

        cancel_shards(client, job_id, message=f"The job was killed by {by}.")
        flow_run = _wait_final(client, flow_run.id, wait)
        after = jobfacts.job_from_flow_run(flow_run)
    if after.status == JobStatus.CANCELED.value:
        return LifecycleResult(job_id, after.status, f"killed by {by}")
    return LifecycleResult(
        job_id,
        after.status,
        f"kill requested by {by}; its process has not stopped it yet "
        "(the watchdog ends it if that process is gone)",
    )


def failed_devices(job: jobfacts.JobFact) -> list[str]:
    """Devices of a finished job that did not succeed: Error, Completed with errors, or
    left unfinished (In progress / Pending) because the job stopped under them."""
    return [d.device for d in job.devices if d.status != JobStatus.COMPLETED.value]


def rerun_job(
    job_id: str,
    *,
    failed_only: bool = False,
    owner: str | None = None,
    who: str | None = None,
    source: str | None = None,
) -> RerunResult:
    """Submit a new job with the same action, parameters and info; return its id.

    Two activity rows: ``rerun`` on the old job and ``run`` on the new one."""
    who, source = activity.actor(who or _context_or(owner), source)
    owner = owner or who
    res = _rerun(job_id, failed_only=failed_only, owner=owner)
    _record(who, "rerun", res.rerun_of, source, f"as job {res.job_id}", owner)
    _record(who, "run", res.job_id, source, f"{res.action}, rerun of {res.rerun_of}", owner)
    return res


def _rerun(job_id: str, *, failed_only: bool, owner: str) -> RerunResult:
    job = read_job(job_id, with_logs=False)
    if not JobStatus(job.status).is_final:
        raise LifecycleError(
            f"job {job_id} is {job.status}: rerun it once it has ended (or kill it first)"
        )
    if failed_only:
        target = failed_devices(job)
        if not target:
            raise LifecycleError(f"job {job_id} has no failed devices: nothing to rerun")
    else:
        target = list(job.parameters.get("target") or [d.device for d in job.devices])
    new_id = submit_job(
        job.action,
        target=target,
        params=dict(job.parameters.get("params") or {}),
        info=job.info,
        owner=owner,
        rerun_of=job.id,
    )
    return RerunResult(new_id, job.id, job.action, target)
