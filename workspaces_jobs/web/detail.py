"""One job for the detail view: from the history when it is final there, else live.

* A job the history holds as **settled** (final, and synced after its last log lines
  arrived) is read from the file: nothing about it can change any more, and a big job's
  thousands of log lines come from one query instead of hundreds of API pages.
* Any other job is read live (:func:`workspaces_jobs.jobs.read_job`, the same facts as
  ``wsjobs show``), so an In progress job shows its latest progress and log lines and a
  job the sync has not pulled yet is already there.
* When the API does not know the job (history kept longer than the server's retention)
  or cannot be reached, the history copy is shown with a note saying so.

Both paths build the same :class:`~workspaces_jobs.jobfacts.JobFact`; the history copy
comes from :mod:`workspaces_jobs.reporting.reader`, as ``wsjobs show``'s fallback does.
The Logs tab shows at most :data:`MAX_LINES_PER_STEP` lines per step (the last ones) and
says how many it left out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from workspaces_jobs import logview
from workspaces_jobs.jobfacts import JobFact, LogFact, StepFact
from workspaces_jobs.logview import LogGroup, StepLines, step_order  # noqa: F401
from workspaces_jobs.reporting import reader

#: Log lines shown per step (the last ones); the rest: ``wsjobs show``, exports, Prefect UI.
MAX_LINES_PER_STEP = 500


@dataclass
class JobDetail:
    job: JobFact
    source: str  # "live" or "history"
    note: str | None = None  # why the history copy is shown

    @property
    def steps_by_device(self) -> dict[str, list[StepFact]]:
        out: dict[str, list[StepFact]] = defaultdict(list)
        for step in sorted(self.job.steps, key=step_order):
            out[step.device].append(step)
        return out


def group_logs(job: JobFact, *, cap: int = MAX_LINES_PER_STEP) -> list[LogGroup]:
    """Log lines per device, per step, the last ``cap`` of each (see :mod:`.logview`)."""
    return logview.group_logs(job, cap=cap)


def load_job(job_id: str, con_factory: Any) -> JobDetail | None:
    """The settled history copy, else live from the API, else the history copy with a
    note; None when neither knows the job.

    ``con_factory`` is a context manager factory yielding the history connection (the
    server's :meth:`~workspaces_jobs.web.state.WebState.db`), used only on fallback.
    """
    from workspaces_jobs.gateway import JobNotFound
    from workspaces_jobs.jobs import read_job

    with con_factory() as con:
        if reader.is_settled(con, job_id):
            job = reader.job(con, job_id)
            if job is not None:
                return JobDetail(job, "history")
    note: str | None
    try:
        return JobDetail(read_job(job_id), "live")
    except JobNotFound:
        note = "The Prefect API no longer has this job; this is the copy in the history file."
    except Exception as exc:  # API down or failing: the history copy is still useful
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        note = f"The Prefect API could not be read ({first}); this is the history file's copy."
    with con_factory() as con:
        job = reader.job(con, job_id)
    return JobDetail(job, "history", note) if job else None


_WEB_WORDS = (
    ("(stop it with `wsjobs kill`)", "(stop it with Kill on its page)"),
    ("(use `wsjobs cancel`)", "(use Cancel)"),
    (
        "Add --now to get its summary emailed now",
        "Use “Email the summary now” on its page to get it",
    ),
    (
        "--now is for jobs that have ended; without it the email goes out when the job ends",
        "“Email the summary now” is for jobs that have ended; "
        "“Notify me when it ends” emails when it ends",
    ),
    ("rerun it once it has ended (or kill it first)", "rerun it once it has ended (or Kill it)"),
    ("check the id with `wsjobs list`", "check the id in the Jobs list"),
)


def web_words(message: str) -> str:
    """A lifecycle/notify message in the web page's words instead of CLI flags."""
    for cli, web in _WEB_WORDS:
        message = message.replace(cli, web)
    return message


def is_error(line: LogFact) -> bool:
    """A line worth jumping to: level ERROR or worse, or a step's stderr."""
    return line.level.upper() in ("ERROR", "CRITICAL") or (line.stream == "err")


def eta_text(state: Any, job_id: str) -> str | None:
    """The estimate line for a running job, or None (see :mod:`workspaces_jobs.eta`)."""
    from workspaces_jobs.eta import describe, estimate_job, history_durations
    from workspaces_jobs.jobs import read_job

    try:
        job = read_job(job_id, with_logs=False)
        with state.db() as con:
            stats = history_durations(con, job.action, exclude=job.id)
    except Exception:  # an estimate is a nicety: never break the page for it
        return None
    return describe(estimate_job(job, stats))
