"""workspaces-jobs: the Jobs module of an endpoint-management product, on Prefect 3.

Public Python API (the CLI is built on it)::

    from workspaces_jobs import submit_job, wait_job, read_job, run_job, JobStatus

The job functions import Prefect on first use, so importing this package is cheap and
leaves room to point ``PREFECT_API_URL`` at the managed local server first.
"""

from __future__ import annotations

from typing import Any

from workspaces_jobs.status import ErrorReason, JobStatus, job_status, parse_status

__all__ = [
    "ErrorReason",
    "JobStatus",
    "job_status",
    "parse_status",
    "read_job",
    "run_job",
    "submit_job",
    "wait_job",
]

_LAZY = {"read_job", "run_job", "submit_job", "wait_job"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from workspaces_jobs import jobs

        return getattr(jobs, name)
    raise AttributeError(name)
