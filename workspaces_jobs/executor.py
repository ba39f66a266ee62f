"""Execute one job created by ``submit_job``: ``python -m workspaces_jobs.executor JOB_ID``.

Runs the job's flow in this process against the existing flow run, so the run's id,
tags and parameters are those the user saw when it was created.

Two lifecycle rules live here because no Prefect worker watches this process:

* **Claim before running.** The executor moves the run Scheduled → Pending before the
  engine proposes Running. Prefect accepts Cancelled → Running for ad-hoc runs, so
  without the claim a job canceled between our check and the engine's start would run
  anyway; Cancelled → Pending is refused by the server, and a run canceled after the
  claim is in Cancelling, from which Running is refused (see ``lifecycle.cancel_job``).
* **Enforce a kill.** A :class:`KillWatcher` thread polls the run's state; on
  Cancelling it stops every step process group and hands the cancel to Prefect's engine
  the way a runner would (control intent "cancel" + SIGTERM), so the engine runs the
  ``on_cancellation`` hooks and ends the run Cancelled.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.flow_engine import run_flow
from prefect.states import Cancelled, Pending

from workspaces_jobs import jobfacts
from workspaces_jobs.catalog import load_actions
from workspaces_jobs.jobs import EXIT_CODES, flow_for
from workspaces_jobs.status import JobStatus

#: Seconds between two reads of the run's state by the kill watcher.
KILL_POLL = 1.0


def _request_engine_cancel() -> None:
    """Make the running flow engine cancel the run, as Prefect's runner does.

    The runner commits the control intent "cancel" and sends SIGTERM; the engine's
    SIGTERM bridge raises ``TerminationSignal`` in the main thread and, seeing the
    intent, proposes Cancelling (on_cancellation hooks run) then Cancelled instead of
    Crashed. Prefect 3.9.1 has no public call for the intent, hence the private import.
    """
    from prefect._internal import control_listener

    control_listener._set_intent("cancel")
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)


class KillWatcher(threading.Thread):
    """Watches one run for Cancelling (``wsjobs kill``) and stops the job when it comes."""

    def __init__(self, job_id: str, *, poll: float = KILL_POLL) -> None:
        super().__init__(name=f"kill-watcher-{job_id}", daemon=True)
        self.job_id = UUID(job_id)
        self.poll = poll
        self.fired = threading.Event()
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def run(self) -> None:
        from workspaces_jobs.tasks.transports import terminate_all

        with get_client(sync_client=True) as client:
            while not self._halt.wait(self.poll):
                try:
                    flow_run = client.read_flow_run(self.job_id)
                except Exception:  # the API is briefly unreachable: try again
                    continue
                state = flow_run.state
                if state is None:
                    continue
                if state.type == StateType.CANCELLING and flow_run.run_count:
                    # The engine only turns SIGTERM into a cancel once it runs the flow
                    # (Running accepted: run_count > 0); before that it exits by itself.
                    self.fired.set()
                    if not self._halt.is_set():
                        _request_engine_cancel()
                    terminate_all(refuse_new=True)
                    return


def _late_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM outside the engine: ignore our own kill request, exit on any other."""
    from prefect._internal import control_listener

    if control_listener.get_intent() == "cancel":
        return
    raise SystemExit(128 + signum)


def _finish_cancelling(client: Any, job_id: str) -> None:
    """A run left in Cancelling (canceled while starting, or killed as it ended) → Cancelled."""
    from workspaces_jobs.flows.hooks import record_status

    flow_run = client.read_flow_run(UUID(job_id))
    if flow_run.state is None or flow_run.state.type != StateType.CANCELLING:
        return
    state: Any = Cancelled(message=flow_run.state.message or "Canceled by the user.")
    client.set_flow_run_state(flow_run.id, state, force=True)
    if flow_run.run_count:  # it ran: its hooks did not see the cancel
        flow, _ = flow_for(jobfacts.job_from_flow_run(flow_run).action)
        record_status(flow, flow_run, state)


def _with_job_timeout(flow: Any, action: str) -> Any:
    """Apply a YAML action's job-level ``timeout`` as the flow's hard timeout."""
    spec = load_actions().get(action)
    limit = getattr(spec, "timeout", None) if spec else None
    return flow.with_options(timeout_seconds=limit) if limit else flow


def claim(job_id: str) -> bool:
    """Move a Pending job's run Scheduled → Pending; False if it is not ours to run."""
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(job_id))
        job = jobfacts.job_from_flow_run(flow_run)
        if job.status != JobStatus.PENDING.value:
            print(f"job {job_id} is {job.status}; nothing to run")
            return False
        result: Any = client.set_flow_run_state(flow_run.id, Pending(message="executor starting"))
    if result.status.value != "ACCEPT":
        print(f"job {job_id} was not claimed ({result.status.value}); nothing to run")
        return False
    return True


def run_claimed(job_id: str) -> int:
    """Run a claimed job's flow with the kill watcher; return the exit code of its status."""
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(job_id))
    action = jobfacts.job_from_flow_run(flow_run).action
    flow, _ = flow_for(action)
    flow = _with_job_timeout(flow, action)
    signal.signal(signal.SIGTERM, _late_sigterm)
    watcher = KillWatcher(job_id)
    watcher.start()
    try:
        state: Any = run_flow(
            flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
        )
    except BaseException as exc:  # TerminationSignal after a kill: the run is Cancelled
        if not watcher.fired.is_set():
            raise
        print(f"job {job_id} was killed ({type(exc).__name__})")
        state = Cancelled()
    finally:
        watcher.stop()
    with get_client(sync_client=True) as client:
        _finish_cancelling(client, job_id)
        final_run = client.read_flow_run(UUID(job_id))
    if final_run.state is not None and final_run.state.is_final():
        state = final_run.state
    return EXIT_CODES.get(jobfacts.job_status_of_state(state), 1)


def execute(job_id: str) -> int:
    return run_claimed(job_id) if claim(job_id) else 0


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m workspaces_jobs.executor JOB_ID")
    from workspaces_jobs import gateway

    gateway.install()  # a server restart mid-job: wait for the API, keep the log lines
    sys.exit(execute(sys.argv[1]))


if __name__ == "__main__":
    main()
