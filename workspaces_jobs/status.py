"""The six job statuses and the one mapping from Prefect states to them.

This is the only place that decides what a Prefect state means for a job: the
hooks, ``wsjobs show``, the history sync and the reports all call
:func:`job_status`. It is pure (no I/O) so it can be table-tested against
every Prefect ``StateType`` and named state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from workspaces_jobs.errors import BadInput


class JobStatus(StrEnum):
    """What an ops engineer sees; the values are the labels stored in the history."""

    PENDING = "Pending"
    IN_PROGRESS = "In progress"
    COMPLETED = "Completed"
    COMPLETED_WITH_ERRORS = "Completed with errors"
    ERROR = "Error"
    CANCELED = "Canceled by the user"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def slug(self) -> str:
        """A shell- and event-friendly spelling, e.g. ``completed-with-errors``."""
        return _SLUGS[self]


class ErrorReason(StrEnum):
    """Why a job ended in Error; kept next to the status everywhere."""

    FAILED = "failed"
    CRASHED = "crashed"
    TIMED_OUT = "timed out"
    INACTIVITY = "inactivity"


FINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.ERROR, JobStatus.CANCELED}
)

_SLUGS = {
    JobStatus.PENDING: "pending",
    JobStatus.IN_PROGRESS: "in-progress",
    JobStatus.COMPLETED: "completed",
    JobStatus.COMPLETED_WITH_ERRORS: "completed-with-errors",
    JobStatus.ERROR: "error",
    JobStatus.CANCELED: "canceled",
}

#: Prefect state names this project gives to its own states.
COMPLETED_WITH_ERRORS_STATE_NAME = "Completed with errors"
INACTIVITY_STATE_NAME = "Inactivity"
#: A spread job whose process runs but none of whose shards a worker has taken yet
#: (``flows/spread.py``): a RUNNING state by this name is a Pending job (nothing ran on any
#: device), so it can still be canceled; it leaves this state when a shard starts.
WAITING_FOR_WORKERS_STATE_NAME = "Waiting for workers"

# Friendly spellings users type on the command line and in saved filters.
_ALIASES: dict[str, JobStatus] = {
    **{s.slug: s for s in JobStatus},
    **{s.value.lower(): s for s in JobStatus},
    "running": JobStatus.IN_PROGRESS,
    "inprogress": JobStatus.IN_PROGRESS,
    "scheduled": JobStatus.PENDING,
    "cancelled": JobStatus.CANCELED,
    "canceled-by-the-user": JobStatus.CANCELED,
    "failed": JobStatus.ERROR,
    "ok": JobStatus.COMPLETED,
    "partial": JobStatus.COMPLETED_WITH_ERRORS,
}


def parse_status(text: str) -> JobStatus:
    """Turn a user's spelling (``error``, ``completed-with-errors``, ``Canceled``) into a status.

    Raises ``ValueError`` with the accepted spellings, so CLIs can print it as is.
    """
    key = text.strip().lower().replace("_", "-")
    status = _ALIASES.get(key) or _ALIASES.get(key.replace("-", " "))
    if status is None:
        accepted = ", ".join(s.slug for s in JobStatus)
        raise BadInput(f"unknown status {text!r}: use one of {accepted}")
    return status


@dataclass(frozen=True)
class MappedStatus:
    status: JobStatus
    reason: ErrorReason | None = None


def job_status(state_type: str | None, state_name: str | None, *, started: bool) -> MappedStatus:
    """Map a Prefect state (type, name) to the job status and, for Error, its reason.

    ``started`` says whether the run ever reached RUNNING (Prefect's ``start_time`` is
    set): a SCHEDULED or PENDING state after a start means a retry is on its way, so the
    job is still In progress rather than Pending.

    A spread job waiting for its first shard to start (RUNNING, named
    :data:`WAITING_FOR_WORKERS_STATE_NAME`) is Pending: none of its devices ran yet.

    ``state_type`` is the ``StateType`` value (``"COMPLETED"``); ``None`` means the run
    has no state yet, i.e. Pending.
    """
    kind = (state_type or "").upper().removeprefix("STATETYPE.")
    name = state_name or ""
    if kind in ("", "SCHEDULED", "PENDING"):
        if started or name == "AwaitingRetry":
            return MappedStatus(JobStatus.IN_PROGRESS)
        return MappedStatus(JobStatus.PENDING)
    if kind == "RUNNING" and name == WAITING_FOR_WORKERS_STATE_NAME:
        return MappedStatus(JobStatus.PENDING)
    if kind in ("RUNNING", "PAUSED", "CANCELLING"):
        return MappedStatus(JobStatus.IN_PROGRESS)
    if kind == "COMPLETED":
        if name == COMPLETED_WITH_ERRORS_STATE_NAME:
            return MappedStatus(JobStatus.COMPLETED_WITH_ERRORS)
        return MappedStatus(JobStatus.COMPLETED)
    if kind == "CANCELLED":
        return MappedStatus(JobStatus.CANCELED)
    if kind == "CRASHED":
        return MappedStatus(JobStatus.ERROR, ErrorReason.CRASHED)
    if kind == "FAILED":
        if name == "TimedOut":
            return MappedStatus(JobStatus.ERROR, ErrorReason.TIMED_OUT)
        if name == INACTIVITY_STATE_NAME:
            return MappedStatus(JobStatus.ERROR, ErrorReason.INACTIVITY)
        return MappedStatus(JobStatus.ERROR, ErrorReason.FAILED)
    raise ValueError(f"unknown Prefect state type {state_type!r}")
