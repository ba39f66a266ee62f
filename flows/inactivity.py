"""The job's own inactivity guard: Error (inactivity) at once, the steps keep running.

The spec: a job that stays In progress too long without recording anything becomes
Error, "however, this does not mean that the job will not be completed successfully".
So the guard does not stop anything. While a job's steps run, every output line, step
start and step end counts as activity (:func:`touch`); when the job recorded nothing
for its inactivity timeout, the guard forces the flow run to
``Failed(name="Inactivity")`` through the API (visible everywhere at once) and runs the
job status hook for it (log line, ``workspaces.job.error`` event, notifications) — once.

The steps go on. Prefect accepts the run's own final state afterwards (checked with
3.9.1, see DESIGN.md), so a job that resumes and finishes ends with its real outcome,
flagged "recovered after inactivity" (``flows/action.py``). A step silent for the
action's *hard limit* (``inactivity_hard_limit``, ``WSJOBS_INACTIVITY_HARD_LIMIT``) is
stopped by its transport and the job ends Error (timed out) (``flows/fanout.py``).

The guard lives in the job's process; a process that died or froze is the watchdog's
(``flows/watchdog.py``), which applies the same timeout plus a grace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.logging import get_logger

from workspaces_jobs.status import INACTIVITY_STATE_NAME

logger = get_logger(__name__)

#: Guards of the jobs this process runs, by job id: steps touch theirs on every line.
_GUARDS: dict[str, InactivityGuard] = {}
_GUARDS_LOCK = threading.Lock()


def touch(job_id: str) -> None:
    """The job recorded something (an output line, a step started or ended)."""
    guard = _GUARDS.get(job_id)
    if guard is not None:
        guard.touch()


def mark_inactive(job_id: str, timeout: float) -> bool:
    """Force a Running job to Error (inactivity) and tell about it; False if it was not Running.

    The state is forced (from the job's own process Prefect would otherwise accept it
    anyway, but ``force`` keeps the rule the same as the watchdog's). The hook runs here
    because no engine transition fires it for a state set through the client.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Failed

    from workspaces_jobs.flows.hooks import record_outside, write_job_log

    with get_client(sync_client=True) as client:
        current = client.read_flow_run(UUID(job_id)).state
        if current is None or current.type != StateType.RUNNING:
            return False
        state: Any = Failed(
            name=INACTIVITY_STATE_NAME,
            message=(
                f"no output or step change for {timeout:g} s (inactivity timeout); "
                "its steps keep running until the hard limit"
            ),
        )
        client.set_flow_run_state(UUID(job_id), state, force=True)
        write_job_log(
            client,
            UUID(job_id),
            f"inactivity: the job recorded nothing for {timeout:g} s, so it is now Error "
            "(inactivity). Its steps keep running: if they finish, the real outcome replaces "
            "this status (flagged 'recovered after inactivity'); a step silent past the hard "
            "limit is stopped and the job ends Error (timed out).",
            level=40,
        )
        record_outside(client, UUID(job_id), state)
    return True


class InactivityGuard:
    """Watches one job's activity; marks it Error (inactivity) once when it goes quiet.

    ``clock`` is injectable (monotonic seconds) and ``mark`` is what marking does, so
    the timing rule is testable without a server; jobs use the defaults.
    """

    def __init__(
        self,
        job_id: str,
        timeout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        mark: Callable[[str, float], bool] = mark_inactive,
        poll: float = 0.5,
    ) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.clock = clock
        self._mark = mark
        self.poll = poll
        self.last = clock()
        self.marked = threading.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"inactivity-{job_id}", daemon=True)

    def touch(self) -> None:
        self.last = self.clock()

    def due(self) -> bool:
        """Silent for the timeout and not marked yet."""
        return not self.marked.is_set() and self.clock() - self.last >= self.timeout

    def check(self) -> bool:
        """Mark the job if it is due; True when this call marked it."""
        if not self.due():
            return False
        self.marked.set()  # once, even if marking fails: the watchdog is the fallback
        try:
            return self._mark(self.job_id, self.timeout)
        except Exception:
            logger.exception(f"marking job {self.job_id} Error (inactivity) failed")
            return False

    def _run(self) -> None:
        while not self._halt.wait(min(self.poll, max(0.05, self.timeout / 4))):
            if self.marked.is_set():
                return
            self.check()

    def __enter__(self) -> InactivityGuard:
        with _GUARDS_LOCK:
            _GUARDS[self.job_id] = self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop watching before the job's final state is proposed (no mark after it)."""
        self._halt.set()
        self._thread.join(timeout=60)
        with _GUARDS_LOCK:
            if _GUARDS.get(self.job_id) is self:
                del _GUARDS[self.job_id]
