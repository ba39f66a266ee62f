"""Run steps across devices: parallel between devices, in order on one device.

The flow thread submits a device's next step only when its previous one finished, so
there are no "NotReady" placeholder task runs for steps that never run. At most
``max_parallel`` devices are worked on at once. A failed critical step stops that
device (its later steps are counted as skipped); a failed non-critical step does not.
The result, a :class:`JobOutcome`, turns into the flow's final Prefect state.
"""

from __future__ import annotations

import math
import os
import queue
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prefect.client.schemas.objects import FlowRun, StateType, TaskRun
from prefect.futures import PrefectFuture
from prefect.states import Cancelled, Completed, Failed, State
from prefect.utilities.annotations import quote

from workspaces_jobs import runmeta, stepenv
from workspaces_jobs.catalog import Device, Step, render_script
from workspaces_jobs.flows import spread
from workspaces_jobs.flows.inactivity import InactivityGuard, touch
from workspaces_jobs.flows.progress import ProgressReporter
from workspaces_jobs.status import COMPLETED_WITH_ERRORS_STATE_NAME
from workspaces_jobs.stepenv import EnvSpec
from workspaces_jobs.tasks.lines import Masker, forget_masker, process_secrets, register_masker
from workspaces_jobs.tasks.run_step import run_step, silenced
from workspaces_jobs.tasks.transports import close_job, release_device

#: Prefect's name for a run over its timeout; a step over its own uses it too.
TIMED_OUT_STATE_NAME = "TimedOut"


@dataclass
class DeviceResult:
    device: str
    steps_ok: int = 0
    failed_steps: list[str] = field(default_factory=list)
    skipped: int = 0
    critical_failure: bool = False
    silenced: bool = False  # a step was stopped at the inactivity hard limit
    timed_out: bool = False  # a critical step hit its own hard timeout

    @property
    def ok(self) -> bool:
        return not self.failed_steps


@dataclass
class JobOutcome:
    devices: list[DeviceResult]
    #: Set when the job was canceled or killed and its process outlived it (a spread job
    #: whose shards all stopped before its worker stopped it): it ends Cancelled, as told.
    stopped: str | None = None

    def final_state(self) -> State[None]:
        """Completed, Completed with errors (a COMPLETED-type state), Failed, or Cancelled."""
        if self.stopped is not None:
            return Cancelled(message=self.stopped)
        failed = [d for d in self.devices if not d.ok]
        if not failed:
            return Completed(message=f"all steps succeeded on {len(self.devices)} device(s)")
        summary = "; ".join(f"{d.device}: {', '.join(d.failed_steps)}" for d in failed)
        if any(d.silenced for d in failed):
            # The job was Error (inactivity) already; the hard limit ends it timed out.
            return Failed(
                name=TIMED_OUT_STATE_NAME,
                message=f"a step stayed silent past the inactivity hard limit ({summary})",
            )
        if all(d.critical_failure for d in self.devices):
            message = f"all {len(self.devices)} device(s) failed ({summary})"
            if any(d.timed_out for d in failed):  # Error keeps the reason: timed out
                return Failed(name=TIMED_OUT_STATE_NAME, message=message)
            return Failed(message=message)
        return Completed(
            name=COMPLETED_WITH_ERRORS_STATE_NAME,
            message=f"{len(failed)} of {len(self.devices)} device(s) had failures ({summary})",
        )


def step_env(
    params: Mapping[str, str],
    *,
    device: Device,
    step: Step,
    job_id: str,
    declared: EnvSpec | None = None,
    blocks: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What a script sees besides the local basics (see :mod:`workspaces_jobs.stepenv`):
    the device's and the action's declared variables, parameters as ``PARAM_<NAME>``,
    and the job context."""
    env = stepenv.declared((device.env, declared), os.environ, blocks)
    env.update({f"PARAM_{name.upper()}": value for name, value in params.items()})
    env.update(
        WSJOBS_JOB_ID=job_id,
        WSJOBS_DEVICE=device.name,
        WSJOBS_STEP=step.name,
        WSJOBS_DEVICE_TAGS=",".join(device.tags),
    )
    return env


def run_steps(
    *,
    job_id: str,
    devices: Sequence[Device],
    steps: Sequence[Step],
    params: Mapping[str, str],
    max_parallel: int,
    inactivity: float | None,
    hard_limit: float | None = None,
    env: EnvSpec | None = None,
    secrets: Sequence[str] = (),
) -> JobOutcome:
    """Run the steps; ``inactivity`` marks the job Error (inactivity) when it goes quiet
    (:mod:`.inactivity`), ``hard_limit`` stops a step silent for that long. ``secrets``
    (secret parameter values), the Secret blocks the action and devices name and this
    process's credentials are masked in every step line (``tasks/lines.py``)."""
    blocks = stepenv.load_secret_blocks([env, *(d.env for d in devices)])
    register_masker(job_id, Masker(process_secrets()).with_values([*secrets, *blocks.values()]))
    guard = InactivityGuard(job_id, inactivity) if inactivity else None
    try:
        if guard is None:
            return _run_steps(job_id, devices, steps, params, max_parallel, hard_limit, env, blocks)
        with guard:
            return _run_steps(job_id, devices, steps, params, max_parallel, hard_limit, env, blocks)
    finally:
        forget_masker(job_id)


def _run_steps(
    job_id: str,
    devices: Sequence[Device],
    steps: Sequence[Step],
    params: Mapping[str, str],
    max_parallel: int,
    hard_limit: float | None,
    env: EnvSpec | None,
    blocks: Mapping[str, str],
) -> JobOutcome:
    results = {d.name: DeviceResult(d.name) for d in devices}
    progress = ProgressReporter(job_id, total=len(devices) * len(steps))
    done: queue.SimpleQueue[tuple[Device, int, PrefectFuture[int]]] = queue.SimpleQueue()
    waiting = deque(devices)
    in_flight = 0

    def submit(device: Device, position: int) -> None:
        step = steps[position]
        script = render_script(step.script, params=params, device=device.name, job_id=job_id)
        step_vars = step_env(
            params, device=device, step=step, job_id=job_id, declared=env, blocks=blocks
        )
        # quote(): Prefect need not walk these models looking for futures on every submit.
        # Prefect unwraps quote() before the call; its typed submit() cannot say so.
        future = run_step.submit(  # type: ignore[call-overload]
            quote(device),
            quote(step),
            script,
            quote(step_vars),
            position + 1,
            len(steps),
            hard_limit,
        )
        touch(job_id)
        future.add_done_callback(lambda f: done.put((device, position, f)))

    try:
        while waiting or in_flight:
            while waiting and in_flight < max_parallel:
                submit(waiting.popleft(), 0)
                in_flight += 1
            device, position, future = done.get()
            touch(job_id)
            result = results[device.name]
            future.wait()  # records the final state from the thread's result: no API read
            state = future.state
            progress.step_finished()
            if state.is_completed():
                result.steps_ok += 1
            else:
                result.failed_steps.append(steps[position].name)
                result.silenced = result.silenced or silenced(state)
                if steps[position].critical:
                    result.critical_failure = True
                    result.timed_out = state.name == TIMED_OUT_STATE_NAME
                    result.skipped = len(steps) - position - 1
                    progress.step_finished(result.skipped)
                    in_flight -= 1
                    release_device(job_id, device.name)
                    continue
            if position + 1 < len(steps):
                submit(device, position + 1)
            else:
                in_flight -= 1
                release_device(job_id, device.name)
    finally:
        progress.finish()
        close_job(job_id)  # SSH connections the job opened (no-op without SSH devices)
    return JobOutcome([results[d.name] for d in devices])


# --- one job across many workers (flows/spread.py) -------------------------------------------


def outcome_from_shards(
    devices: Sequence[str],
    task_runs: Sequence[TaskRun],
    unfinished: Sequence[str],
    steps: int,
) -> JobOutcome:
    """The job's outcome from its shards' step task runs, by the rules of an unspread job.

    ``unfinished``: devices of shards that did not end by themselves (lost with their
    worker, failed before their steps, stopped); each of them that has not finished every
    step counts as failed by a critical step, i.e. Error (crashed). A step that never
    finished (no position known) counts as critical.
    """
    results = {name: DeviceResult(name) for name in devices}
    for task_run in task_runs:
        state = task_run.state
        ref = runmeta.parse_step(task_run.name, state.message if state else None)
        if ref is None or ref.device not in results:
            continue
        result = results[ref.device]
        if state is not None and state.is_completed():
            result.steps_ok += 1
            continue
        result.failed_steps.append(ref.step)
        result.silenced = result.silenced or (state is not None and silenced(state))
        if ref.critical is not False:
            result.critical_failure = True
            result.timed_out = result.timed_out or (
                state is not None and state.name == TIMED_OUT_STATE_NAME
            )
    for name in unfinished:
        result = results[name]
        if result.steps_ok < steps and not result.critical_failure:
            result.failed_steps.append("crashed")
            result.critical_failure = True
    return JobOutcome(list(results.values()))


def run_spread(
    flow_run: FlowRun, devices: Sequence[Device], steps: int, shard_size: int
) -> JobOutcome:
    """Run the job's devices as shards on the pool's workers and wait for them all
    (see :mod:`workspaces_jobs.flows.spread`)."""
    from prefect.client.orchestration import get_client
    from prefect.logging import get_run_logger

    log = get_run_logger()
    job_id = str(flow_run.id)
    names = [d.name for d in devices]
    shards = spread.split(names, shard_size)
    progress = ProgressReporter(job_id, total=len(names) * steps)
    with get_client(sync_client=True) as client:
        try:
            # Pending (cancelable) until a worker takes a shard: before any shard exists,
            # so a cancel finds every shard started after it (see spread.watch).
            waiting = spread.wait_for_workers(client, flow_run.id, len(shards))
            ids = spread.start_shards(client, flow_run, shards)
            log.info(
                f"spread over workers: {len(names)} devices in {len(ids)} shards of at most "
                f"{shard_size} ({', '.join(str(i) for i in ids)})"
            )
            watched = spread.watch(
                client,
                ids,
                progress,
                job_id=flow_run.id,
                waiting=waiting,
                lost_after=spread.LOST_HEARTBEATS * (spread.heartbeat_seconds() or math.inf),
                tell=log.info,
            )
        except BaseException:
            told = spread.cancel_shards(
                client, job_id, message=spread.stop_message(client.read_flow_run(flow_run.id))
            )
            if told:
                log.warning(f"the job was stopped: {told} unfinished shard(s) told to stop")
            progress.finish()
            raise
        task_runs = spread.shard_steps(client, ids)
    unfinished: list[str] = []
    for run_id, chunk in zip(ids, shards, strict=True):
        run = watched.runs[str(run_id)]
        if (
            str(run_id) in watched.lost
            or run.state is None
            or (run.state.type != StateType.COMPLETED)
        ):
            unfinished.extend(chunk)
    for lost in sorted(watched.lost):
        log.error(f"shard {lost} was lost with its worker: its unfinished devices are Error")
    progress.done = progress.total
    progress.finish()
    outcome = outcome_from_shards(names, task_runs, unfinished, steps)
    outcome.stopped = watched.stopped
    return outcome
