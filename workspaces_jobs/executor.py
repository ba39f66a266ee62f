"""Execute one job created by ``submit_job``: ``python -m workspaces_jobs.executor JOB_ID``.

Runs the job's flow in this process against the existing flow run, so the run's id,
tags and parameters are those the user saw when it was created. A job that is no
longer Pending when the executor starts (canceled meanwhile) is left alone.
"""

from __future__ import annotations

import sys
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow

from workspaces_jobs import jobfacts
from workspaces_jobs.jobs import EXIT_CODES, flow_for
from workspaces_jobs.status import JobStatus


def execute(job_id: str) -> int:
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(job_id))
    job = jobfacts.job_from_flow_run(flow_run)
    if job.status != JobStatus.PENDING.value:
        print(f"job {job_id} is {job.status}; nothing to run")
        return 0
    flow, _ = flow_for(job.action)
    state = run_flow(flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
    final = jobfacts.job_status_of_state(state)
    return EXIT_CODES.get(final, 1)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m workspaces_jobs.executor JOB_ID")
    sys.exit(execute(sys.argv[1]))


if __name__ == "__main__":
    main()
