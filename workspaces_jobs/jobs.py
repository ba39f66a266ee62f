"""The Python API for jobs: submit, wait, read. The CLI is a thin layer over this.

A job is created as a flow run through the Prefect API (so it exists, Pending and
cancelable, before anything runs) and executed by a separate process
(``python -m workspaces_jobs.executor JOB_ID``) — or by a Prefect worker when it comes
from a deployment. The caller watches it through the API, like every other client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.states import Scheduled

from workspaces_jobs import apipages, apiread, jobfacts, runmeta
from workspaces_jobs.catalog import CatalogError, load_actions, load_inventory
from workspaces_jobs.gateway import read_flow_run, resolve_job_id
from workspaces_jobs.server import ensure_api
from workspaces_jobs.settings import get_settings
from workspaces_jobs.status import JobStatus

#: Process exit codes of ``wsjobs run`` by final status.
EXIT_CODES = {
    JobStatus.COMPLETED: 0,
    JobStatus.ERROR: 1,
    JobStatus.COMPLETED_WITH_ERRORS: 2,
    JobStatus.CANCELED: 3,
}


def _flows() -> tuple[Flow[..., Any], dict[str, Flow[..., Any]]]:
    # The flow modules load (and the Python actions register) only when a job is
    # submitted or the actions are listed, not for every reader of this module.
    from workspaces_jobs.flows import examples  # noqa: F401  (registers Python actions)
    from workspaces_jobs.flows.action import PYTHON_ACTIONS
    from workspaces_jobs.flows.script_action import script_action

    return script_action, PYTHON_ACTIONS


def action_names() -> dict[str, str]:
    """Every action a user can run, with its description."""
    _, python = _flows()
    names = {name: a.description for name, a in load_actions().items()}
    names.update({name: (f.description or "") for name, f in python.items()})
    return dict(sorted(names.items()))


def flow_for(action: str) -> tuple[Flow[..., Any], dict[str, Any]]:
    """The flow that runs ``action`` and the fixed parameters it needs."""
    script_action, python = _flows()
    yaml_actions = load_actions()
    if action in yaml_actions:
        return script_action, {"action": action}
    if action in python:
        return python[action], {}
    known = ", ".join(sorted(set(yaml_actions) | set(python))) or "none"
    raise CatalogError(f"unknown action {action!r}: known actions are {known}")


job_link = apiread.job_link


def submit_job(
    action: str,
    *,
    target: Sequence[str],
    params: Mapping[str, str] | None = None,
    info: str = "",
    owner: str | None = None,
    rerun_of: str | None = None,
    start: bool = True,
    notify: Sequence[str] = (),
) -> str:
    """Validate, create the job (Pending) and start its executor; return the job id.

    Every user mistake (unknown action, device, tag or parameter, invalid ``notify``
    address) raises before a flow run exists. ``notify`` addresses are subscribed before
    the executor starts, so even a job that ends at once emails them.
    """
    # Only a submit needs these (see _flows for why the flows load late).
    from workspaces_jobs.flows.action import default_owner
    from workspaces_jobs.notify import normalize_emails

    emails = normalize_emails(notify) if notify else []

    flow, fixed = flow_for(action)
    load_inventory().resolve(target)
    yaml_actions = load_actions()
    bound = (
        yaml_actions[action].bind_params(params) if action in yaml_actions else dict(params or {})
    )
    owner = default_owner(owner)
    secret = yaml_actions[action].secret_params() if action in yaml_actions else []
    ensure_api()
    parameters = {**fixed, "target": list(target), "params": bound, "info": info, "owner": owner}
    if rerun_of:
        parameters["rerun_of"] = rerun_of
    name = runmeta.job_name(action, info)
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(
            flow,
            name=name,
            parameters=parameters,
            tags=runmeta.job_tags(
                action=action,
                owner=owner,
                rerun_of=rerun_of,
                secret_params=secret,
            ),
            state=Scheduled(),
        )
    job_id = str(flow_run.id)
    if emails:
        from workspaces_jobs.notify.subscriptions import add_subscribers  # with --notify only

        with get_client(sync_client=True) as client:
            add_subscribers(client, job_id, emails, by=owner)
    if start:
        start_executor(job_id)
    return job_id


def start_executor(job_id: str) -> subprocess.Popen[bytes]:
    """Run the job in its own process (its own session: a kill of the CLI leaves it be)."""
    logs = get_settings().home / "executor-logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = open(logs / f"{job_id}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "workspaces_jobs.executor", job_id],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )


def _progress(client: Any, job_id: str) -> float | None:
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(job_id)])),
    )
    return jobfacts.progress_from_artifact(artifacts[0]) if artifacts else None


#: The one reader of one job (httpx, no Prefect on its path: ``wsjobs show``'s speed, #19).
read_job = apiread.read_job


def _read_logs(
    client: Any,
    flow_run_id: UUID,
    by_id: Mapping[str, jobfacts.StepFact],
    after: datetime | None = None,
) -> list[jobfacts.LogFact]:
    """Every log line of a flow run (from ``after`` on, inclusive), oldest first."""
    out: list[jobfacts.LogFact] = []
    for batch in apipages.logs(client, [flow_run_id], since=after):
        out.extend(jobfacts.log_from_api(log, by_id) for log in batch)
    return out


def read_logs(job_id: str, *, after: datetime | None = None) -> list[jobfacts.LogFact]:
    """A job's log lines from ``after`` on (inclusive: callers drop ids they have seen).

    Lines carry their device and step in the message (``runmeta``), so no task runs are
    read: this is the cheap call ``wsjobs logs --follow`` and the web's live view poll.
    """
    job_id = resolve_job_id(job_id)
    with get_client(sync_client=True) as client:
        return _read_logs(client, UUID(job_id), {}, after)


def job_state(job_id: str) -> tuple[JobStatus, float | None, FlowRun]:
    """Current status and progress (two cheap API reads)."""
    with get_client(sync_client=True) as client:
        flow_run = read_flow_run(client, job_id)
        progress = _progress(client, str(flow_run.id))
    fact = jobfacts.job_from_flow_run(flow_run, progress=progress)
    return JobStatus(fact.status), fact.progress, flow_run


def wait_job(
    job_id: str,
    *,
    on_update: Callable[[JobStatus, float | None], None] | None = None,
    poll: float = 0.5,
    timeout: float | None = None,
) -> JobStatus:
    """Poll until the job reaches a final status; return it."""
    ensure_api()
    job_id = resolve_job_id(job_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status, progress, _ = job_state(job_id)
        if on_update:
            on_update(status, progress)
        if status.is_final:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status.value} after {timeout:g} s")
        time.sleep(poll)


def run_job(
    action: str, *, target: Sequence[str], wait: bool = True, **kwargs: Any
) -> jobfacts.JobFact:
    """Submit a job, optionally wait for it, and return its facts."""
    job_id = submit_job(action, target=target, **kwargs)
    if wait:
        wait_job(job_id)
    return read_job(job_id)
