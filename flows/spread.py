"""One job across many workers: its devices in shards, each a flow run any free worker takes.

Above ``WSJOBS_SPREAD_OVER`` devices (0: never), a job started from a deployment does
not run its devices itself: it splits them into shards of at most
``WSJOBS_SHARD_SIZE`` devices and starts, for each, a flow run of **its own deployment**
with the same parameters and only that shard's devices as ``target``
(``prefect.deployments.run_deployment``). They land in the job's work queue, so every
worker of that queue (any site host) takes them as it has room — Prefect's own
scheduling, no engine of ours. A shard is tagged ``shard-of:<job id>`` and carries no job
tag (``workspaces``): it is part of the job, not a job. The job's process then only
watches:

* **one status**: when every shard has ended, the job's outcome is computed from every
  device's steps with the same rules as an unspread job (``flows/fanout.py``,
  ``JobOutcome``), so ``status.job_status`` maps it the same way;
* **one progress bar**: the job's own progress artifact, fed from the count of the
  shards' finished step task runs;
* **one Workspaces tab and one Logs tab**: every reader of a job's task runs and log
  lines also reads its shards' (``apipages.shards_of``) and shows them as the job's;
* **cancel and kill** reach every shard: until a worker takes its first shard the job is
  **Pending** (its own run is RUNNING by the name ``Waiting for workers``: nothing ran on
  any device), so ``wsjobs cancel`` applies and cancels it and every shard; once a shard
  started it is In progress and a killed job sets each unfinished shard Cancelling (its
  worker stops it), as ``wsjobs kill`` does too, in case the job's own process is gone;
* **a lost shard** (its worker or host died: no Prefect heartbeat for
  ``lost_after`` seconds, 2.5 heartbeats by default) is set Crashed with its unfinished
  steps; its devices count as failed by a critical step (Error), and the job ends
  Completed with errors, or Error when every device failed, by the same rules.

Jobs without a deployment (``wsjobs run`` runs them in a local executor) are not spread:
nothing could take the shards; they run as before, with one log line saying so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import FlowRun, StateType, TaskRun
from prefect.states import Cancelled, Cancelling, Crashed, Running, State

from workspaces_jobs import apipages, runmeta
from workspaces_jobs.flows.progress import ProgressReporter
from workspaces_jobs.status import WAITING_FOR_WORKERS_STATE_NAME

#: Seconds between two looks at the shards.
POLL = 2.0
#: A shard without a heartbeat for this many heartbeat intervals is lost.
LOST_HEARTBEATS = 2.5
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
#: Shards per heartbeat query: 50 events a page, at most 3 beats each in the window.
SHARDS_PER_EVENT_QUERY = 15
#: Seconds between the job's "spread: N of M steps finished" lines (when N changed).
TELL_EVERY = 30.0
_FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
_FINAL_NAMES = [t.value for t in _FINAL]
_STOPPING = (StateType.CANCELLING, StateType.CANCELLED)
_QUEUED = ("SCHEDULED", "PENDING", None)


def _waiting(state: State[Any] | None) -> bool:
    return (
        state is not None
        and state.type == StateType.RUNNING
        and state.name == WAITING_FOR_WORKERS_STATE_NAME
    )


def _plain_running(state: State[Any] | None) -> bool:
    return state is not None and state.type == StateType.RUNNING and not _waiting(state)


def _switch(
    client: Any, run_id: UUID, expect: Callable[[State[Any] | None], bool], new: State[Any]
) -> bool:
    """Give the job's own run the RUNNING state ``new`` if its state is still what
    ``expect`` accepts. Prefect has no compare-and-set: a cancel or kill that lands between
    the read and the write would be overwritten, so it is looked for in the run's state
    history right after and put back (then False)."""
    current = client.read_flow_run(run_id).state
    if not expect(current):
        return False
    result: Any = client.set_flow_run_state(run_id, new)
    ours = result.state.id if result.state is not None else None
    since = current.timestamp if current is not None else None
    slipped = [
        s
        for s in client.read_flow_run_states(run_id)
        if s.type in _STOPPING and s.id != ours and (since is None or s.timestamp > since)
    ]
    if slipped:
        last = max(slipped, key=lambda s: s.timestamp)
        back = State(type=last.type, name=last.name, message=last.message)
        client.set_flow_run_state(run_id, back, force=True)
        return False
    return result.state is not None and result.state.type == StateType.RUNNING


def wait_for_workers(client: Any, run_id: UUID, shards: int) -> bool:
    """The job is Pending until a worker takes its first shard (see the module's notes)."""
    message = f"its {shards} shards wait for a free worker of its queue"
    return _switch(
        client,
        run_id,
        _plain_running,
        Running(name=WAITING_FOR_WORKERS_STATE_NAME, message=message),
    )


def shards_started(client: Any, run_id: UUID) -> bool:
    """A worker took a shard: the job is In progress (plain Running again)."""
    return _switch(client, run_id, _waiting, Running(message="a worker started its first shard"))


def split(names: Sequence[str], size: int) -> list[list[str]]:
    """``names`` in order, in as few shards of at most ``size`` as possible, sizes even."""
    if not names:
        return []
    count = math.ceil(len(names) / max(size, 1))
    base, extra = divmod(len(names), count)
    shards, start = [], 0
    for n in range(count):
        end = start + base + (1 if n < extra else 0)
        shards.append(list(names[start:end]))
        start = end
    return shards


def heartbeat_seconds() -> float | None:
    """Prefect's flow-run heartbeat interval (None: heartbeats are off)."""
    from prefect.settings import get_current_settings

    every = get_current_settings().flows.heartbeat_frequency
    return float(every) if every else None


def start_shards(client: Any, flow_run: FlowRun, shards: Sequence[Sequence[str]]) -> list[UUID]:
    """One flow run of the job's deployment per shard; their ids."""
    from prefect.deployments import run_deployment

    assert flow_run.deployment_id is not None
    tag = f"{runmeta.SHARD_TAG}{flow_run.id}"
    ids = []
    for n, names in enumerate(shards, 1):
        parameters = {**(flow_run.parameters or {}), "target": list(names)}
        shard: FlowRun = run_deployment(  # type: ignore[assignment]
            name=flow_run.deployment_id,
            parameters=parameters,
            flow_run_name=f"{flow_run.name} · shard {n} of {len(shards)}",
            tags=[tag],
            timeout=0,
            as_subflow=False,
        )
        # The deployment's own tags (``workspaces``) are merged in by the server: a shard
        # is no job, so it keeps only its shard tag (readers skip it meanwhile too).
        client.update_flow_run(shard.id, tags=[tag])
        ids.append(shard.id)
    return ids


def _runs(client: Any, ids: Sequence[UUID]) -> list[FlowRun]:
    response = client.request(
        "POST",
        "/flow_runs/filter",
        json={"flow_runs": {"id": {"any_": [str(i) for i in ids]}}, "limit": len(ids)},
    )
    response.raise_for_status()
    return FlowRun.model_validate_list(response.json())


def finished_steps(client: Any, ids: Sequence[UUID]) -> int:
    """Step task runs of these shards that have ended (for the job's progress bar)."""
    response = client.request(
        "POST",
        "/task_runs/count",
        json={
            "flow_runs": {"id": {"any_": [str(i) for i in ids]}},
            "task_runs": {"state": {"type": {"any_": _FINAL_NAMES}}},
        },
    )
    response.raise_for_status()
    return int(response.json())


def last_heartbeats(client: Any, ids: Sequence[UUID], since: datetime) -> dict[str, datetime]:
    """The newest heartbeat event of each of these shards since ``since``.

    The events API answers at most 50 events a request, newest first; a shard sends at
    most ``window / heartbeat`` of them in the window, so shards are asked
    :data:`SHARDS_PER_EVENT_QUERY` at a time."""
    newest: dict[str, datetime] = {}
    for start in range(0, len(ids), SHARDS_PER_EVENT_QUERY):
        chunk = ids[start : start + SHARDS_PER_EVENT_QUERY]
        body = {
            "filter": {
                "occurred": {"since": since.isoformat(), "until": datetime.now(UTC).isoformat()},
                "event": {"name": [HEARTBEAT_EVENT]},
                "resource": {"id": [f"prefect.flow-run.{i}" for i in chunk]},
                "order": "DESC",
            },
            "limit": 50,
        }
        response = client.request("POST", "/events/filter", json=body)
        response.raise_for_status()
        for event in response.json().get("events", []):
            run_id = event["resource"]["prefect.resource.id"].removeprefix("prefect.flow-run.")
            when = datetime.fromisoformat(event["occurred"].replace("Z", "+00:00"))
            newest[run_id] = max(when, newest.get(run_id, when))
    return newest


@dataclass
class Watch:
    """The shards as they ended, and which of them were lost."""

    runs: dict[str, FlowRun]
    lost: set[str]
    #: The job's own state message when it was being canceled or killed at the end.
    stopped: str | None = None


def mark_lost(client: Any, run: FlowRun, silent: float) -> None:
    """A shard whose worker died: Crashed, with its unfinished steps."""
    message = (
        f"shard lost: no heartbeat for {silent:.0f} s (its worker or host died);"
        " its unfinished devices are Error (crashed)"
    )
    client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    for task_run in apipages.task_runs(client, [run.id]):
        if task_run.state is None or task_run.state.type not in _FINAL:
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)


def _has_started(run: FlowRun) -> bool:
    return bool(run.run_count) or (run.state is not None and run.state.type.value not in _QUEUED)


def watch(
    client: Any,
    ids: Sequence[UUID],
    progress: ProgressReporter,
    *,
    job_id: UUID | None = None,
    waiting: bool = False,
    lost_after: float,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    poll: float = POLL,
    tell: Callable[[str], Any] = lambda line: None,
    tell_every: float = TELL_EVERY,
) -> Watch:
    """Follow the shards until every one has ended; feed the job's progress bar, and tell
    (a log line of the job) how far they are whenever that changed, at most every
    ``tell_every`` seconds: the job records activity like an unspread one (the watchdog).

    ``job_id``: the job's own run, read along: while ``waiting`` (the job is Pending), the
    first shard a worker takes makes it In progress, and the wait is told every
    ``tell_every`` seconds (waiting for a busy pool is no inactivity); once it is being
    canceled or killed, shards started meanwhile are told to stop as well."""
    lost: set[str] = set()
    started = clock()
    told_at, told = started, -1
    while True:
        try:
            runs = {str(r.id): r for r in _runs(client, [*ids, *([job_id] if job_id else [])])}
            own = runs.pop(str(job_id), None)
            stopping = own is not None and own.state is not None and own.state.type in _STOPPING
            if stopping and own is not None and own.state is not None:
                cancel_shards(
                    client, str(job_id), message=f"The job was stopped: {own.state.message}"
                )
            elif waiting and job_id is not None and any(map(_has_started, runs.values())):
                waiting = False
                shards_started(client, job_id)
            progress.done = finished_steps(client, ids)
            if waiting and (clock() - told_at).total_seconds() >= tell_every:
                queued = sum(not _has_started(r) for r in runs.values())
                tell(f"spread: waiting for a free worker: {queued} of {len(ids)} shards queued")
                told_at = clock()
            elif progress.done != told and (clock() - told_at).total_seconds() >= tell_every:
                tell(f"spread: {progress.done} of {progress.total} steps finished on the shards")
                told_at, told = clock(), progress.done
            _find_lost(client, runs.values(), lost, started, lost_after, clock)
        except Exception as exc:  # the API may be restarting: look again at the next poll
            tell(f"spread: could not read the shards ({exc}); trying again")
            time.sleep(poll)
            continue
        if len(runs) == len(ids) and all(
            r.state is not None and r.state.type in _FINAL for r in runs.values()
        ):
            stopped = (own.state.message or "Canceled.") if stopping and own and own.state else None
            return Watch(runs, lost, stopped)
        time.sleep(poll)


def _find_lost(
    client: Any,
    runs: Iterable[FlowRun],
    lost: set[str],
    started: datetime,
    lost_after: float,
    clock: Callable[[], datetime],
) -> None:
    """Mark Crashed each running shard with no heartbeat for ``lost_after`` seconds (nor a
    start or the watch's own start that recent)."""
    running = [r for r in runs if r.state is not None and r.state.type == StateType.RUNNING]
    if not running:
        return
    now = clock()
    beats = last_heartbeats(client, [r.id for r in running], now - timedelta(seconds=lost_after))
    for run in running:
        alive = max(t for t in (beats.get(str(run.id)), run.start_time, started) if t)
        silent = (now - alive).total_seconds()
        if silent > lost_after:
            mark_lost(client, run, silent)
            lost.add(str(run.id))


def stop_message(job: FlowRun) -> str:
    """What the shards of a stopped job are told: the job's own cancel or kill message."""
    state = job.state
    if state is not None and state.type in _STOPPING and state.message:
        return f"The job was stopped: {state.message}"
    return "The job's process stopped."


def cancel_shards(client: Any, job_id: str, *, message: str = "The job was killed.") -> int:
    """Stop every unfinished shard of a job: Cancelled if it never started, else Cancelling
    (its worker stops its process, like a kill). Returns how many were told; ``message``
    (what happened to the job) becomes their state message."""
    told = 0
    for shard in apipages.shards_of(client, [UUID(str(job_id))]):
        kind = (shard.get("state") or {}).get("type")
        if kind in _FINAL_NAMES or kind == StateType.CANCELLING.value:
            continue
        never_started = kind in _QUEUED
        state: State[Any] = (
            Cancelled(message=message) if never_started else Cancelling(message=message)
        )
        client.set_flow_run_state(UUID(str(shard["id"])), state, force=True)
        told += 1
    return told


def shard_steps(client: Any, ids: Sequence[UUID]) -> list[TaskRun]:
    return apipages.task_runs(client, list(ids), expand_shards=False)
