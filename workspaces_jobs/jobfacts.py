"""Job facts built from Prefect objects: pure functions, shared by ``show`` and the sync.

The reader (``jobs.read_job``) and the history sync fetch flow runs, task runs, logs
and progress artifacts from the API; these functions turn them into the job, step,
device and log records a user sees. Nothing here does I/O, so both paths agree and
the rules (a device's result from its steps, a step's exit code, ...) live once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from workspaces_jobs import runmeta
from workspaces_jobs.status import JobStatus, job_status


@dataclass
class StepFact:
    id: str
    job_id: str
    device: str
    step: str
    position: int | None  # 1-based; None while the step has not finished
    critical: bool
    status: str  # Pending / Running / Completed / Failed / Crashed / Cancelled (Prefect's)
    state_name: str | None
    exit_code: int | None
    message: str | None
    started: datetime | None
    ended: datetime | None


@dataclass
class DeviceFact:
    job_id: str
    device: str
    status: str  # one of the six job statuses, for this device alone
    steps_ok: int
    steps_failed: int
    started: datetime | None
    ended: datetime | None


@dataclass
class LogFact:
    id: str
    job_id: str
    step_id: str | None
    device: str | None
    step: str | None
    ts: datetime
    level: str
    stream: str | None
    message: str


@dataclass
class JobFact:
    id: str
    name: str
    action: str
    info: str
    owner: str
    status: str
    reason: str | None
    prefect_state_type: str | None
    prefect_state_name: str | None
    state_message: str | None
    created: datetime | None
    started: datetime | None
    ended: datetime | None
    expected_start: datetime | None
    progress: float | None
    deployment_id: str | None
    parameters: dict[str, Any]
    tags: list[str]
    canceled_by: str | None
    rerun_of: str | None
    updated: datetime | None
    recovered: bool = False  # Error (inactivity) first, then finished by itself
    devices: list[DeviceFact] = field(default_factory=list)
    steps: list[StepFact] = field(default_factory=list)
    logs: list[LogFact] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StateKind:
    """A state type as Prefect's enum shows it (``.value``), without Prefect."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value


@dataclass
class RunState:
    """The attributes of Prefect's ``State`` that :func:`jobfacts.job_from_flow_run` reads."""

    type: Any
    name: str | None
    message: str | None
    timestamp: datetime | None


@dataclass
class Run:
    """The attributes of Prefect's ``FlowRun`` the sync reads (no model to validate)."""

    id: str
    name: str
    state: RunState | None
    tags: list[str]
    parameters: dict[str, Any]
    run_count: int
    created: datetime | None
    updated: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    expected_start_time: datetime | None
    deployment_id: str | None


def run_from_json(data: Mapping[str, Any]) -> Run:
    """A flow run from the API's JSON (``GET /flow_runs/{id}``), for readers that do not
    import Prefect (``wsjobs show``)."""
    state = data.get("state") or None
    return Run(
        id=data["id"],
        name=data.get("name") or "",
        state=RunState(
            StateKind(state["type"]),
            state.get("name"),
            state.get("message"),
            parse_time(state.get("timestamp")),
        )
        if state
        else None,
        tags=list(data.get("tags") or []),
        parameters=dict(data.get("parameters") or {}),
        run_count=int(data.get("run_count") or 0),
        created=parse_time(data.get("created")),
        updated=parse_time(data.get("updated")),
        start_time=parse_time(data.get("start_time")),
        end_time=parse_time(data.get("end_time")),
        expected_start_time=parse_time(data.get("expected_start_time")),
        deployment_id=data.get("deployment_id"),
    )


_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def _state_type(state: Any) -> str | None:
    return state.type.value if state is not None else None


def masked_parameters(params: dict[str, Any], tags: Iterable[str]) -> dict[str, Any]:
    """The flow run's parameters with each ``secret: true`` action parameter as ``***``
    (names from the ``secret:`` tags), so show, the history, exports and emails never
    carry the value."""
    secret = {t[len(runmeta.SECRET_TAG) :] for t in tags if t.startswith(runmeta.SECRET_TAG)}
    inner = params.get("params")
    if secret and isinstance(inner, dict):
        params["params"] = {k: ("***" if k in secret else v) for k, v in inner.items()}
    return params


def job_from_flow_run(
    flow_run: Any, *, flow_name: str | None = None, progress: float | None = None
) -> JobFact:
    """A job record from a Prefect ``FlowRun`` (steps/devices/logs are added separately)."""
    state = flow_run.state
    tags = list(flow_run.tags or [])
    params = masked_parameters(dict(flow_run.parameters or {}), tags)
    # Prefect stamps a start time on a run canceled while Pending; only a run that
    # entered RUNNING (run_count > 0) has really started.
    started = bool(flow_run.run_count) and flow_run.start_time is not None
    mapped = job_status(_state_type(state), state.name if state else None, started=started)
    final = mapped.status.is_final
    recovered = runmeta.RECOVERED_TAG in tags
    return JobFact(
        id=str(flow_run.id),
        name=flow_run.name,
        action=runmeta.tag_value(tags, runmeta.ACTION_TAG)
        or params.get("action")
        or flow_name
        or "",
        info=str(params.get("info") or ""),
        owner=runmeta.tag_value(tags, runmeta.OWNER_TAG) or str(params.get("owner") or ""),
        status=mapped.status.value,
        reason=mapped.reason.value if mapped.reason else None,
        prefect_state_type=_state_type(state),
        prefect_state_name=state.name if state else None,
        state_message=state.message if state else None,
        created=flow_run.created,
        # A spread job waiting for workers runs its process, but no device has started.
        started=flow_run.start_time if started and mapped.status != JobStatus.PENDING else None,
        ended=_ended(flow_run) if final else None,
        expected_start=flow_run.expected_start_time,
        progress=100.0 if mapped.status == JobStatus.COMPLETED else progress,
        deployment_id=str(flow_run.deployment_id) if flow_run.deployment_id else None,
        parameters=params,
        tags=tags,
        canceled_by=runmeta.tag_value(tags, runmeta.CANCELED_BY_TAG),
        rerun_of=runmeta.tag_value(tags, runmeta.RERUN_TAG) or params.get("rerun_of"),
        updated=getattr(flow_run, "updated", None),
        recovered=recovered,
    )


def _ended(flow_run: Any) -> datetime | None:
    """When the job really ended: its final state's time when that is later.

    Prefect sets ``end_time`` when a run first enters a final state and keeps it when
    the run moves from one final state to another, so after a late completion (Error
    (inactivity) → Completed) ``end_time`` is the moment of the Error.
    """
    state = flow_run.state
    times = [t for t in (flow_run.end_time, state.timestamp if state else None) if t is not None]
    return max(times) if times else None


def step_from_json(task_run: Mapping[str, Any]) -> StepFact | None:
    """A step record from a step task run as the API's JSON; None for task runs that are
    not steps. No Prefect model: the sync reads thousands of task runs a second and the
    model costs more than the rest of the row."""
    state = task_run.get("state") or None
    return _step(
        task_run["id"],
        task_run["flow_run_id"],
        task_run.get("name") or "",
        state.get("type") if state else None,
        state.get("name") if state else None,
        state.get("message") if state else None,
        parse_time(task_run.get("start_time")),
        parse_time(task_run.get("end_time")),
    )


def _step(
    step_id: str,
    job_id: str,
    name: str,
    state_type: str | None,
    state_name: str | None,
    message: str | None,
    started: datetime | None,
    ended: datetime | None,
) -> StepFact | None:
    ref = runmeta.parse_step(name, message)
    if ref is None:
        return None
    return StepFact(
        id=step_id,
        job_id=job_id,
        device=ref.device,
        step=ref.step,
        position=ref.position,
        critical=ref.critical if ref.critical is not None else True,
        status=state_type.title() if state_type else "Pending",
        state_name=state_name,
        exit_code=ref.exit_code,
        message=message,
        started=started,
        ended=ended,
    )


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp (ISO 8601, ``Z`` or an offset) as an aware datetime."""
    return datetime.fromisoformat(value) if value else None


def devices_from_steps(
    job_id: str, steps: Sequence[StepFact], planned: Iterable[str] = ()
) -> list[DeviceFact]:
    """Each device's own result, from its steps (the rule the job outcome follows too).

    All steps Completed → Completed; a failed critical step → Error; a step stopped by
    a kill → Canceled by the user; only non-critical failures → Completed with errors;
    a step still running → In progress. Devices in ``planned`` with no step yet are
    Pending.
    """
    by_device: dict[str, list[StepFact]] = {name: [] for name in planned}
    for s in steps:
        by_device.setdefault(s.device, []).append(s)
    devices = []
    for name, own in by_device.items():
        ok = sum(1 for s in own if s.status == "Completed")
        failed = [s for s in own if s.status in ("Failed", "Crashed")]
        canceled = any(s.status == "Cancelled" for s in own)
        running = any(s.status in ("Running", "Pending", "Scheduled") for s in own)
        if not own:
            status = JobStatus.PENDING
        elif running:
            status = JobStatus.IN_PROGRESS
        elif any(s.critical for s in failed):
            status = JobStatus.ERROR
        elif canceled:  # its steps were stopped by a kill
            status = JobStatus.CANCELED
        elif failed:
            status = JobStatus.COMPLETED_WITH_ERRORS
        else:
            status = JobStatus.COMPLETED
        starts = [s.started for s in own if s.started]
        ends = [s.ended for s in own if s.ended]
        devices.append(
            DeviceFact(
                job_id=job_id,
                device=name,
                status=status.value,
                steps_ok=ok,
                steps_failed=len(failed),
                started=min(starts) if starts else None,
                ended=max(ends) if ends and not running else None,
            )
        )
    return devices


def log_from_api(log: Any, steps_by_id: Mapping[str, StepFact]) -> LogFact:
    return _log(
        str(log.id),
        str(log.flow_run_id),
        str(log.task_run_id) if log.task_run_id else None,
        log.timestamp,
        log.level,
        log.message,
        steps_by_id,
    )


def log_from_json(log: Mapping[str, Any], steps_by_id: Mapping[str, StepFact]) -> LogFact:
    """The same from the API's JSON (no Prefect model per line: see :func:`step_from_json`)."""
    ts = parse_time(log["timestamp"])
    assert ts is not None
    return _log(
        log["id"],
        log["flow_run_id"],
        log.get("task_run_id"),
        ts,
        log["level"],
        log["message"],
        steps_by_id,
    )


def _log(
    log_id: str,
    job_id: str,
    step_id: str | None,
    ts: datetime,
    level: int,
    message: str,
    steps_by_id: Mapping[str, StepFact],
) -> LogFact:
    line = runmeta.parse_log_message(message)
    step = steps_by_id.get(step_id) if step_id else None
    return LogFact(
        id=log_id,
        job_id=job_id,
        step_id=step_id,
        device=line.device or (step.device if step else None),
        step=line.step or (step.step if step else None),
        stream=line.stream,
        ts=ts,
        level=_LEVELS.get(level, str(level)),
        message=line.text,
    )


def progress_from_artifact(artifact: Any) -> float | None:
    try:
        return float(artifact.data)
    except (TypeError, ValueError):
        return None


def job_status_of_state(state: Any) -> JobStatus:
    """The job status of a final Prefect state object (as returned by a flow call)."""
    return job_status(_state_type(state), state.name, started=True).status


FINAL_STEP_STATUSES = frozenset({"Completed", "Failed", "Crashed", "Cancelled"})


def settled(job: JobFact) -> bool:
    """True when nothing about the job can still change: final status and final steps.

    Step states arrive at the API a moment after the flow's own final state; readers
    (``read_job``, the history sync) re-check a job until it is settled.
    """
    return JobStatus(job.status).is_final and all(
        s.status in FINAL_STEP_STATUSES for s in job.steps
    )


def steps_missing(job: JobFact, now: datetime, recent: timedelta) -> bool:
    """A job that ended less than ``recent`` ago and ran every device has a device
    without steps: the server has not recorded them yet (readers wait a moment)."""
    fresh = job.ended is not None and now - job.ended < recent
    return (
        ran_every_device(job)
        and fresh
        and any(d.status == JobStatus.PENDING.value for d in job.devices)
    )


def ran_every_device(job: JobFact) -> bool:
    """The job's flow went through every planned device: it ended Completed (with or
    without errors) or Error because steps failed (not killed, crashed or canceled)."""
    return job.status in (JobStatus.COMPLETED.value, JobStatus.COMPLETED_WITH_ERRORS.value) or (
        job.status == JobStatus.ERROR.value and job.reason == "failed"
    )


def steps_recorded(
    job: JobFact, devices: Sequence[DeviceFact], planned_steps: int | None = None
) -> bool:
    """Every planned device × step of a final job is recorded final in the API.

    Task-run states reach the server from events, after the flow's own final state (a
    minute and more behind on a big job under load), so a job can be final while some
    of its steps are still Running or not listed at all. True when every step listed is
    final and, for a job that ran every device, each planned device has its steps: all
    ``planned_steps`` of them (when the action's step count is known), or up to a
    failed critical step (the device stopped there).
    """
    if any(s.status not in FINAL_STEP_STATUSES for s in job.steps):
        return False
    if not ran_every_device(job):
        return True
    by_device: dict[str, list[StepFact]] = {d.device: [] for d in devices}
    for s in job.steps:
        by_device.setdefault(s.device, []).append(s)
    for own in by_device.values():
        if not own:
            return False
        stopped = any(s.critical and s.status in ("Failed", "Crashed") for s in own)
        if planned_steps is not None and len(own) < planned_steps and not stopped:
            return False
    return True
