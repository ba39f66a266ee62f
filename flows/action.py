"""Declare actions as Prefect flows that behave as jobs.

:func:`job_flow` turns a function into a Prefect flow with everything a job needs: the
status hooks, a thread-pool task runner for the per-device steps, the job tags on its
run, and the conversion of a returned :class:`JobOutcome` into the final state
(Completed, "Completed with errors", or Failed). :func:`python_action` does the same
and registers the flow under an action name, so ``wsjobs run NAME`` finds it.

Every job flow takes the same job parameters — ``target`` (device names, ``tag:T`` or
``all``), ``params``, ``info``, ``owner``, ``rerun_of`` — so the launcher, reruns and
the history treat all actions alike.
"""

from __future__ import annotations

import functools
import getpass
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from prefect import Flow, flow
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from workspaces_jobs.catalog import Step, load_inventory
from workspaces_jobs.flows.fanout import JobOutcome, run_spread, run_steps
from workspaces_jobs.flows.hooks import HOOKS
from workspaces_jobs.runmeta import RECOVERED_TAG, SECRET_TAG, is_shard, job_name, job_tags
from workspaces_jobs.settings import get_settings
from workspaces_jobs.status import INACTIVITY_STATE_NAME
from workspaces_jobs.stepenv import EnvSpec

F = TypeVar("F", bound=Callable[..., Any])

#: Python-declared actions by action name (script actions come from YAML).
PYTHON_ACTIONS: dict[str, Flow[..., Any]] = {}

#: Threads for step tasks; the number of devices worked on at once is bounded
#: separately by ``WSJOBS_MAX_PARALLEL`` so it can change without redefining flows.
TASK_THREADS = 64


def default_owner(owner: str | None) -> str:
    return owner or getpass.getuser()


def job_flow(name: str, **flow_options: Any) -> Callable[[F], Flow[..., Any]]:
    def decorate(fn: F) -> Flow[..., Any]:
        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any) -> Any:
            from workspaces_jobs.tasks.transports import allow_new, terminate_all

            allow_new()
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                # A kill (TerminationSignal), the job's hard timeout or a crash of the
                # flow body: steps run in their own sessions and would outlive the job.
                terminate_all(refuse_new=True)
                raise
            final = result.final_state() if isinstance(result, JobOutcome) else result
            note_late_completion(final)
            return final

        options: dict[str, Any] = {
            "task_runner": ThreadPoolTaskRunner(max_workers=TASK_THREADS),
            "persist_result": False,
            "log_prints": True,
            **HOOKS,
            **flow_options,
        }
        return flow(name=name, **options)(body)

    return decorate


def note_late_completion(final: Any) -> None:
    """Flag and log a job that finishes after it was given a final state from outside.

    The job's inactivity guard (or the watchdog, for a frozen process) marks a silent job
    Error (inactivity) while its steps may still be running. If they finish, Prefect
    accepts the job's real outcome, which replaces that status (docs/lifecycle.md,
    "Job lifecycle", says why it wins). Then the run gets the ``recovered-after-inactivity``
    tag (the list, the detail view and the recovery email read it; the end time becomes
    the real one) and a "late completion" line makes the story readable in the job's
    logs, next to the Running → Inactivity → Completed state history. A step stopped at
    the hard limit (TimedOut) is no recovery.
    """
    from prefect.client.orchestration import get_client
    from prefect.logging import get_run_logger

    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    if flow_run is None:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run.id)
            current = run.state
            if current is None or not current.is_final():
                return
            outcome = getattr(final, "name", None) or "Completed"
            if current.name == INACTIVITY_STATE_NAME and outcome != "TimedOut":
                tags = sorted(set(run.tags) | {RECOVERED_TAG})
                client.update_flow_run(flow_run.id, tags=tags)
    except Exception:  # telling, never deciding: a failed read changes nothing
        return
    from workspaces_jobs.status import job_status

    before = job_status(current.type.value, current.name, started=True)
    reason = f" ({before.reason.value})" if before.reason else ""
    get_run_logger().warning(
        f"late completion: the job was marked {before.status.value}{reason} at "
        f"{current.timestamp:%Y-%m-%d %H:%M:%S} UTC ({current.message or 'no message'}); "
        f"it finished afterwards with {outcome}, which replaces that status"
    )


def python_action(name: str, **flow_options: Any) -> Callable[[F], Flow[..., Any]]:
    """Register a Python function as the action ``name`` (a job flow)."""

    def decorate(fn: F) -> Flow[..., Any]:
        job = job_flow(name, **flow_options)(fn)
        PYTHON_ACTIONS[name] = job
        return job

    return decorate


def ensure_job_tags(
    action: str, owner: str, rerun_of: str | None, secret_params: Sequence[str] = ()
) -> None:
    """Give the running flow run its job tags and name if it was started without them.

    ``wsjobs run`` sets them when it creates the run; a run started by a deployment
    schedule or ``prefect deployment run`` may not have them, and the history only
    picks up runs tagged ``workspaces``. Costs one API call, and only then.
    """
    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    if flow_run is None:
        return

    # A deployment may carry ``workspaces`` alone: each kind of job tag (workspaces,
    # action:, owner:, rerun-of:) it lacks is added, none it has is replaced.
    def kind(tag: str) -> str:
        return tag.split(":", 1)[0]

    have = {kind(t) for t in flow_run.tags}
    wanted = job_tags(action=action, owner=owner, rerun_of=rerun_of)
    missing = [t for t in wanted if kind(t) not in have]
    # secret:<name> tags are per name: each one missing is added.
    missing += [t for t in (f"{SECRET_TAG}{n}" for n in secret_params) if t not in flow_run.tags]
    # A run a schedule pre-created has a random name until the managed worker names it.
    name = job_name(action, str((flow_run.parameters or {}).get("info") or ""))
    if not missing and flow_run.name == name:
        return
    from prefect.client.orchestration import get_client

    tags = sorted(set(flow_run.tags) | set(missing))
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=tags, name=name)


def run_job_steps(
    action: str,
    steps: Sequence[Step],
    *,
    target: Sequence[str],
    params: Mapping[str, str],
    owner: str | None,
    rerun_of: str | None = None,
    inactivity: float | None = None,
    hard_limit: float | None = None,
    env: EnvSpec | None = None,
    secret_params: Sequence[str] = (),
) -> JobOutcome:
    """Run ``steps`` on the devices named by ``target`` inside the current job flow.

    ``inactivity`` (default ``WSJOBS_INACTIVITY_TIMEOUT``): seconds without output
    before the job becomes Error (inactivity) while its steps go on; ``hard_limit``
    (default ``WSJOBS_INACTIVITY_HARD_LIMIT``): seconds a step may stay silent before it
    is stopped and the job ends Error (timed out); ``env``: the variables the action
    declares for its steps (see :mod:`workspaces_jobs.stepenv`); ``secret_params``: names
    of parameters whose values are masked in log lines and shown as ``***``.
    """
    ctx = get_run_context()
    flow_run = ctx.flow_run  # type: ignore[union-attr]
    assert flow_run is not None, "run_job_steps must be called inside a job flow"
    settings = get_settings()
    shard = is_shard(flow_run.tags)  # a shard of a spread job runs its devices itself
    if not shard:
        ensure_job_tags(action, default_owner(owner), rerun_of, secret_params)
    devices = load_inventory().resolve(target)
    if not shard and settings.spread_over and len(devices) > settings.spread_over:
        if flow_run.deployment_id is not None:
            return run_spread(flow_run, devices, len(steps), settings.shard_size)
        from prefect.logging import get_run_logger

        get_run_logger().info(
            f"not spread over workers ({len(devices)} devices > WSJOBS_SPREAD_OVER "
            f"{settings.spread_over}): the job has no deployment whose workers could take "
            "its shards, so it runs here"
        )
    return run_steps(
        job_id=str(flow_run.id),
        devices=devices,
        steps=steps,
        params=params,
        max_parallel=settings.max_parallel,
        inactivity=inactivity or settings.inactivity_timeout,
        hard_limit=hard_limit or settings.inactivity_hard_limit,
        env=env,
        secrets=[params[n] for n in secret_params if n in params],
    )
