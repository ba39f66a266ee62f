"""An action written in Python rather than YAML: steps built in code, same job semantics."""

from __future__ import annotations

from workspaces_jobs.catalog import Step
from workspaces_jobs.flows.action import python_action, run_job_steps
from workspaces_jobs.flows.fanout import JobOutcome


@python_action("disk-report", description="Report the biggest files in each device's sandbox.")
def disk_report(
    target: list[str],
    params: dict[str, str] | None = None,
    info: str = "",
    owner: str | None = None,
    rerun_of: str | None = None,
) -> JobOutcome:
    """Steps are ordinary :class:`Step` objects; parameters still arrive as variables."""
    top = (params or {}).get("top", "5")
    steps = [
        Step(name="usage", script="du -sh . 2>/dev/null"),
        Step(name="largest", critical=False, script='ls -S | head -n "$PARAM_TOP"'),
    ]
    return run_job_steps(
        "disk-report", steps, target=target, params={"top": top}, owner=owner, rerun_of=rerun_of
    )
