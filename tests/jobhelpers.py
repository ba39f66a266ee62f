"""Small helpers for tests that run real jobs through the real API."""

from __future__ import annotations

from collections.abc import Sequence

from workspaces_jobs.jobfacts import JobFact
from workspaces_jobs.jobs import read_job, submit_job, wait_job


def run(action: str, target: Sequence[str] = ("all",), **kwargs: object) -> JobFact:
    """Submit a job, wait for its final status (60 s max) and read it back with its logs."""
    job_id = submit_job(action, target=list(target), **kwargs)  # type: ignore[arg-type]
    wait_job(job_id, timeout=60)
    return read_logs_settled(job_id)


def read_logs_settled(job_id: str, attempts: int = 20) -> JobFact:
    """Logs reach the API in batches; read until the job's final hook line is there."""
    import time

    job = read_job(job_id)
    for _ in range(attempts):
        # The flow's own last line (no task run): every step line was sent before it.
        if any(
            line.message.startswith("Finished in state") and line.step_id is None
            for line in job.logs
        ):
            return job
        time.sleep(0.3)
        job = read_job(job_id)
    return job


def step_lines(job: JobFact, device: str, step: str) -> list[str]:
    return [
        line.message
        for line in job.logs
        if line.device == device and line.step == step and line.stream in ("out", "err")
    ]
