"""The status mapping, table-driven over every Prefect state type and named state."""

from __future__ import annotations

import pytest
from prefect.client.schemas.objects import StateType
from prefect.states import (
    AwaitingRetry,
    Cancelled,
    Cancelling,
    Completed,
    Crashed,
    Failed,
    Late,
    Paused,
    Pending,
    Retrying,
    Running,
    Scheduled,
)

from workspaces_jobs.status import ErrorReason, JobStatus, job_status, parse_status

S = JobStatus
CASES = [
    # (state, started, status, reason)
    (Scheduled(), False, S.PENDING, None),
    (Late(), False, S.PENDING, None),
    (Pending(), False, S.PENDING, None),
    (AwaitingRetry(), True, S.IN_PROGRESS, None),
    (AwaitingRetry(), False, S.IN_PROGRESS, None),
    (Scheduled(), True, S.IN_PROGRESS, None),
    (Running(), True, S.IN_PROGRESS, None),
    (Running(name="Waiting for workers"), True, S.PENDING, None),  # a spread job, no shard ran
    (Retrying(), True, S.IN_PROGRESS, None),
    (Paused(), True, S.IN_PROGRESS, None),
    (Cancelling(), True, S.IN_PROGRESS, None),
    (Completed(), True, S.COMPLETED, None),
    (Completed(name="Completed with errors"), True, S.COMPLETED_WITH_ERRORS, None),
    (Failed(), True, S.ERROR, ErrorReason.FAILED),
    (Failed(name="TimedOut"), True, S.ERROR, ErrorReason.TIMED_OUT),
    (Failed(name="Inactivity"), True, S.ERROR, ErrorReason.INACTIVITY),
    (Crashed(), True, S.ERROR, ErrorReason.CRASHED),
    (Cancelled(), True, S.CANCELED, None),
    (Cancelled(), False, S.CANCELED, None),
]


@pytest.mark.parametrize(("state", "started", "status", "reason"), CASES)
def test_mapping(state, started, status, reason) -> None:
    mapped = job_status(state.type.value, state.name, started=started)
    assert (mapped.status, mapped.reason) == (status, reason)


def test_every_state_type_is_covered() -> None:
    assert {c[0].type for c in CASES} == set(StateType)


def test_no_state_yet_is_pending() -> None:
    assert job_status(None, None, started=False).status is S.PENDING


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown Prefect state type"):
        job_status("EXPLODED", None, started=True)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("error", S.ERROR),
        ("Error", S.ERROR),
        ("completed-with-errors", S.COMPLETED_WITH_ERRORS),
        ("Completed with errors", S.COMPLETED_WITH_ERRORS),
        ("completed_with_errors", S.COMPLETED_WITH_ERRORS),
        ("canceled", S.CANCELED),
        ("cancelled", S.CANCELED),
        ("Canceled by the user", S.CANCELED),
        ("in-progress", S.IN_PROGRESS),
        ("running", S.IN_PROGRESS),
        ("pending", S.PENDING),
        ("completed", S.COMPLETED),
    ],
)
def test_parse_status(text: str, status: JobStatus) -> None:
    assert parse_status(text) is status


def test_parse_status_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="use one of pending, in-progress"):
        parse_status("exploded")
