"""Jobs for the history tests: one of each final status, created once per test session.

``audit_jobs`` is a session fixture (import it into a test module to use it) so the sync
tests and the documented audit-query tests share the same four jobs (~6 s in all: the three
that run are submitted together and waited for together).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import pytest
from jobhelpers import read_logs_settled

from workspaces_jobs import runmeta
from workspaces_jobs.jobfacts import JobFact
from workspaces_jobs.jobs import read_job, submit_job, wait_job

#: (key, action, target, owner, info) of the jobs that run to a final status.
RUNS = [
    ("ok", "ok", ["t1"], "alice", "audit: fine everywhere"),
    ("mixed", "mixed", ["all"], "bob", "audit: check fails on t3"),
    ("broken", "broken", ["t2"], "alice", "audit: boom on t2"),
]


def cancel_pending(job_id: str, by: str) -> None:
    """Cancel a job that has not started, the way ``wsjobs cancel`` records it."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(job_id))
        client.update_flow_run(run.id, tags=[*run.tags, f"{runmeta.CANCELED_BY_TAG}{by}"])
        client.set_flow_run_state(run.id, Cancelled(message=f"canceled by {by}"), force=True)


@pytest.fixture(scope="session", name="audit_jobs")
def audit_jobs_fixture() -> dict[str, JobFact]:
    ids = {
        key: submit_job(action, target=target, owner=owner, info=info)
        for key, action, target, owner, info in RUNS
    }
    canceled = submit_job("ok", target=["t3"], owner="bob", info="audit: never ran", start=False)
    cancel_pending(canceled, "carol")
    jobs = {}
    for key, job_id in ids.items():
        wait_job(job_id, timeout=90)
        jobs[key] = read_logs_settled(job_id)
    jobs["canceled"] = read_job(canceled)
    return jobs


def keep_only(path: object, job_ids: Sequence[str]) -> None:
    """Drop every job but these from a synced file (other tests' jobs share the server)."""
    from workspaces_jobs.reporting.store import open_store

    with open_store(path) as con:  # type: ignore[arg-type]
        con.execute("CREATE TEMP TABLE keep AS SELECT unnest($ids) AS id", {"ids": list(job_ids)})
        con.execute("DELETE FROM jobs WHERE id NOT IN (SELECT id FROM keep)")
        for table in ("steps", "job_devices", "logs", "job_states", "notifications", "sync_jobs"):
            con.execute(f"DELETE FROM {table} WHERE job_id NOT IN (SELECT id FROM keep)")
