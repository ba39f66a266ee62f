"""The watchdog: jobs whose process died or froze end in Error (inactivity) through the API.

A job's own inactivity guard (``flows/inactivity.py``) marks a silent job Error
(inactivity) while its steps go on, but only while the job's process lives. A
SIGKILLed, OOM-killed or frozen process runs no hook and writes nothing, and its flow
run would stay Running forever. The watchdog looks at the jobs that are In progress
(flow runs tagged ``workspaces`` in Running or Cancelling, plus runs an executor
claimed but never started) and, when a
job recorded nothing — no log line, no step state change, no state change — for longer
than its inactivity timeout plus a grace, it:

* forces a Running job to ``Failed(name="Inactivity")`` (Error, reason inactivity);
* ends a job stuck in Cancelling (killed, but nobody left to stop it) Cancelled;
* fails a run claimed by an executor that died before starting it (Crashed);

writes a log line into the job explaining why, runs the job status hook for it (log
line, event, notifications), and kills the job's leftover local step processes on
this host. Runnable once (``wsjobs watchdog --once``), in a loop (``wsjobs watchdog``)
or as a Prefect flow deployed on a schedule (``flows/watchdog.py:watchdog``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import LogSort, TaskRunSort
from prefect.states import Cancelled, Crashed, Failed, State

from workspaces_jobs import runmeta
from workspaces_jobs.catalog import CatalogError, load_actions
from workspaces_jobs.settings import get_settings
from workspaces_jobs.status import INACTIVITY_STATE_NAME

#: Seconds added to a job's inactivity timeout before the watchdog acts: logs reach the
#: API in batches and a live job's own guard must get the first chance.
DEFAULT_GRACE = 30.0
#: Seconds between sweeps of ``wsjobs watchdog`` without ``--once``.
DEFAULT_INTERVAL = 30.0

_WATCHED = [StateType.RUNNING, StateType.CANCELLING, StateType.PENDING]


@dataclass(frozen=True)
class WatchdogAction:
    job_id: str
    action: str
    was: str  # the Prefect state type the job was found in
    now: str  # the Prefect state name the watchdog gave it
    silent_for: float
    limit: float
    reaped: int  # leftover local step processes killed
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inactivity_limit(flow_run: FlowRun, actions: dict[str, Any]) -> float:
    action = runmeta.tag_value(flow_run.tags, runmeta.ACTION_TAG) or ""
    own = getattr(actions.get(action), "inactivity_timeout", None)
    return float(own or get_settings().inactivity_timeout)


def last_activity(client: SyncPrefectClient, flow_run: FlowRun) -> datetime:
    """The newest of: the run's state change, its newest log line, its newest step change."""
    times = [flow_run.state.timestamp if flow_run.state else flow_run.created]
    logs = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])),
        sort=LogSort.TIMESTAMP_DESC,
        limit=1,
    )
    times += [log.timestamp for log in logs]
    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
    for sort in (TaskRunSort.EXPECTED_START_TIME_DESC, TaskRunSort.END_TIME_DESC):
        for task_run in client.read_task_runs(flow_run_filter=run_filter, sort=sort, limit=1):
            times += [
                t
                for t in (task_run.start_time, task_run.end_time, task_run.expected_start_time)
                if t is not None
            ]
    return max(t for t in times if t is not None)


def _in_progress_jobs(client: SyncPrefectClient) -> list[FlowRun]:
    runs: list[FlowRun] = []
    offset, page = 0, 200
    while True:
        batch = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[runmeta.JOB_TAG]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_WATCHED)),
            ),
            limit=page,
            offset=offset,
        )
        runs += batch
        if len(batch) < page:
            return runs
        offset += page


def _verdict(flow_run: FlowRun, silent: float, limit: float) -> tuple[State[Any], str] | None:
    state = flow_run.state
    assert state is not None
    quiet = f"no log line or state change for {silent:.0f} s (inactivity timeout {limit:g} s)"
    if state.type == StateType.RUNNING:
        return (
            Failed(
                name=INACTIVITY_STATE_NAME,
                message=f"{quiet}: its process died or froze; marked by the watchdog",
            ),
            f"watchdog: {quiet}; the job's process died or froze, so the job is now Error "
            "(inactivity). If that process comes back and finishes, its real outcome "
            "replaces this status (a 'late completion' line says so).",
        )
    if state.type == StateType.CANCELLING:
        return (
            Cancelled(message=f"{state.message or 'Killed.'} Ended by the watchdog ({quiet})."),
            f"watchdog: the job was being killed but nothing stopped it ({quiet}); "
            "it is now Canceled by the user.",
        )
    if state.type == StateType.PENDING and not flow_run.run_count:
        return (
            Crashed(message=f"its executor never started it ({quiet}); marked by the watchdog"),
            f"watchdog: the job was claimed but never started ({quiet}); it is now Error "
            "(crashed). Rerun it with `wsjobs rerun`.",
        )
    return None


def _close_steps(client: SyncPrefectClient, flow_run: FlowRun, job_state: State[Any]) -> None:
    """Steps the dead process left Running or Pending end Crashed (Cancelled for a kill),
    so the job's devices show what happened and readers need not wait for them."""
    done: set[Any] = set()
    while True:  # a page at a time: a closed step leaves the filter, so read from the top again
        page = [
            r
            for r in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(
                        type=TaskRunFilterStateType(
                            any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]
                        )
                    )
                ),
                limit=200,
            )
            if r.id not in done
        ]
        if not page:
            break
        done |= {r.id for r in page}
        _close_page(client, page, job_state)


def _close_page(client: SyncPrefectClient, runs: list[Any], job_state: State[Any]) -> None:
    for task_run in runs:
        old = task_run.state.message if task_run.state else None
        if job_state.type == StateType.CANCELLED:
            state: State[Any] = Cancelled(message=f"{old or 'step'}: the job was killed")
        else:
            state = Crashed(message="the job's process died or froze while this step ran")
        client.set_task_run_state(task_run.id, state, force=True)


def sweep(*, grace: float = DEFAULT_GRACE, reap: bool = True) -> list[WatchdogAction]:
    """One pass over the In progress jobs; return what was done (empty when all are live)."""
    from workspaces_jobs.flows.hooks import record_outside, write_job_log
    from workspaces_jobs.server import ensure_api
    from workspaces_jobs.tasks.transports.local import reap_job

    ensure_api()
    try:
        actions: dict[str, Any] = dict(load_actions())
    except CatalogError:  # a broken actions folder must not stop the watchdog
        actions = {}
    done: list[WatchdogAction] = []
    with get_client(sync_client=True) as client:
        for flow_run in _in_progress_jobs(client):
            limit = _inactivity_limit(flow_run, actions)
            silent = (datetime.now(UTC) - last_activity(client, flow_run)).total_seconds()
            if silent <= limit + grace:
                continue
            verdict = _verdict(flow_run, silent, limit)
            if verdict is None:
                continue
            # Re-read right before forcing: a job that moved meanwhile is alive.
            current = client.read_flow_run(flow_run.id).state
            if current is None or flow_run.state is None or current.id != flow_run.state.id:
                continue
            state, line = verdict
            client.set_flow_run_state(flow_run.id, state, force=True)
            _close_steps(client, flow_run, state)
            write_job_log(client, flow_run.id, line, level=40)
            record_outside(client, flow_run.id, state)
            reaped = reap_job(str(flow_run.id)) if reap else []
            done.append(
                WatchdogAction(
                    job_id=str(flow_run.id),
                    action=runmeta.tag_value(flow_run.tags, runmeta.ACTION_TAG) or "",
                    was=flow_run.state.type.value,
                    now=state.name or state.type.value,
                    silent_for=round(silent, 1),
                    limit=limit,
                    reaped=len(reaped),
                    message=state.message or "",
                )
            )
    return done


def send_owed_emails() -> str:
    """Send the emails owed for ended jobs no hook covered; return a one-line summary.

    Covers killed processes, jobs canceled while Pending and SMTP outages. Safe next to
    the jobs' own hooks: each subscriber is emailed once. Mail trouble is reported, never
    raised, so it cannot hide the sweep's result.
    """
    from workspaces_jobs.notify import deliver_owed

    try:
        sent = [o for o in deliver_owed(via="watchdog") if o.result == "sent"]
    except Exception as exc:
        return f"watchdog: delivering notifications failed: {type(exc).__name__}: {exc}"
    return f"watchdog: {len(sent)} notification email(s) sent"


def run_forever(
    *,
    interval: float = DEFAULT_INTERVAL,
    grace: float = DEFAULT_GRACE,
    on_sweep: Callable[[list[WatchdogAction]], None] | None = None,
    sweeps: int | None = None,
) -> None:
    """Sweep every ``interval`` seconds (``sweeps`` bounds the count, for tests).

    A sweep that fails (the API is down while the managed server restarts, a bad
    answer) is reported in one line and the loop goes on: the watchdog runs as a
    companion of the managed server and must outlive its restarts.
    """
    count = 0
    while sweeps is None or count < sweeps:
        started = time.monotonic()
        try:
            done = sweep(grace=grace)
        except Exception as exc:
            print(
                f"watchdog: sweep failed, retrying in {interval:g} s: {_one_line(exc)}",
                file=sys.stderr,
                flush=True,
            )
            _revive_managed_server()
        else:
            if on_sweep:
                on_sweep(done)
            emails = send_owed_emails()
            if not emails.startswith("watchdog: 0 "):  # quiet when nothing was owed
                print(emails, file=sys.stderr, flush=True)
        count += 1
        if sweeps is None or count < sweeps:
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


def _revive_managed_server() -> None:
    """As the managed server's companion, start it again if its process is gone."""
    import os

    from workspaces_jobs.server import COMPANION_ENV, revive

    if not os.environ.get(COMPANION_ENV):
        return
    try:
        info = revive()
    except Exception as exc:
        print(f"watchdog: could not restart the local server: {_one_line(exc)}", file=sys.stderr)
        return
    if info is not None:
        print(
            f"watchdog: the local Prefect server was gone; started it again on {info.api_url}",
            file=sys.stderr,
            flush=True,
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


@flow(name="wsjobs-watchdog", log_prints=True, persist_result=False)
def watchdog(grace: float = DEFAULT_GRACE) -> list[dict[str, Any]]:
    """One watchdog sweep as a Prefect flow: deploy it on a schedule (e.g. every minute)."""
    done = sweep(grace=grace)
    for item in done:
        print(f"{item.job_id} ({item.action}): {item.was} → {item.now}: {item.message}")
    print(f"watchdog: {len(done)} job(s) marked")
    print(send_owed_emails())
    return [item.to_dict() for item in done]
