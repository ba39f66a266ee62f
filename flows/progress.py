"""The job's progress bar: one Prefect progress artifact, pushed on a timer.

Measured against a local server, one artifact update costs ~12 ms. Updating once per
step would add that to every step, so steps only bump an in-memory counter and a
background thread pushes the percentage at most every :data:`INTERVAL` seconds, plus
once at the end (100 %).
"""

from __future__ import annotations

import threading
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_logger

from workspaces_jobs.runmeta import progress_key

INTERVAL = 0.5
logger = get_logger(__name__)


class ProgressReporter:
    def __init__(self, job_id: str, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._pushed = -1.0
        self._stop = threading.Event()
        self._artifact: UUID | None = None
        self._lock = threading.Lock()
        try:
            self._artifact = create_progress_artifact(  # type: ignore[assignment]
                0.0, key=progress_key(job_id), description=self._description()
            )
        except Exception:  # progress is informative; never let it fail the job
            logger.warning("could not create the progress artifact", exc_info=True)
        self._thread = threading.Thread(target=self._loop, name="wsjobs-progress", daemon=True)
        self._thread.start()

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 1)

    def _description(self) -> str:
        return f"{self.done} of {self.total} steps finished"

    def step_finished(self, count: int = 1) -> None:
        self.done += count

    def _push(self) -> None:
        with self._lock:
            percent = self.percent
            if self._artifact is None or percent == self._pushed:
                return
            try:
                update_progress_artifact(self._artifact, percent, description=self._description())
                self._pushed = percent
            except Exception:
                logger.warning("could not update the progress artifact", exc_info=True)

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._push()

    def finish(self) -> None:
        """Stop the timer and push the final figure (100 % when every step ran)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._push()
