"""The built-in script action: steps declared in YAML (``WSJOBS_ACTIONS`` folder)."""

from __future__ import annotations

from workspaces_jobs.catalog import get_action
from workspaces_jobs.flows.action import job_flow, run_job_steps
from workspaces_jobs.flows.fanout import JobOutcome


@job_flow("script-action")
def script_action(
    action: str,
    target: list[str],
    params: dict[str, str] | None = None,
    info: str = "",
    owner: str | None = None,
    rerun_of: str | None = None,
) -> JobOutcome:
    """Run the YAML action ``action`` on ``target``: the change described by ``info``."""
    spec = get_action(action)
    return run_job_steps(
        action,
        spec.steps,
        target=target,
        params=spec.bind_params(params),
        owner=owner,
        rerun_of=rerun_of,
        inactivity=spec.inactivity_timeout,
        hard_limit=spec.inactivity_hard_limit,
        env=spec.env,
        secret_params=spec.secret_params(),
    )
