"""Schedules and later jobs: Prefect deployments with schedules, created through the API.

A schedule is a Prefect deployment of the action's flow with one schedule (cron, interval,
or a one-off time), the job parameters (``target``, ``params``, ``info``, ``owner``) and the
job tags (``workspaces``, ``action:``, ``owner:``). Prefect's scheduler copies the tags onto
every run it pre-creates, so those runs are Pending jobs from the moment they exist (the
history, ``wsjobs list``, ``cancel``); the managed worker (:mod:`workspaces_jobs.worker`)
names them ``action: info`` (:func:`workspaces_jobs.runmeta.job_name`) and runs them.
Because schedules are deployments, the Prefect UI shows them, and deployments declared in
``prefect.yaml`` with the ``workspaces`` tag are listed by ``wsjobs schedules`` too.

A later one-off job (``wsjobs run --at/--in``) is a flow run of the action's on-demand
deployment (``<flow>/wsjobs-run``, no schedule) in state Scheduled at that time: a Pending
job at once, cancellable, that the worker starts when it is due.

Everything a user types is validated before anything is created, exactly like
``wsjobs run`` (unknown action, device, tag or parameter; bad cron, unknown zone, a time in
the past): :class:`~workspaces_jobs.errors.BadInput`, nothing created.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any

from workspaces_jobs import runmeta
from workspaces_jobs.errors import BadInput, NotFound
from workspaces_jobs.reporting import windows
from workspaces_jobs.settings import get_settings

#: Name of the on-demand deployment each action's flow gets for later one-off jobs.
RUN_DEPLOYMENT = "wsjobs-run"
#: The ``prefect.yaml`` pull step: run the code this host has installed.
PULL_STEPS: list[dict[str, Any]] = [{"workspaces_jobs.deploy.set_project_directory": {}}]
#: How many upcoming runs ``wsjobs schedules`` shows per schedule.
NEXT_RUNS = 3
#: A worker whose last heartbeat is older than this is not polling.
WORKER_STALE = timedelta(seconds=120)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HHMM_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class Cadence:
    """When a schedule runs: ``kind`` once/cron/every, how it reads, its zone and schedule."""

    kind: str
    text: str
    timezone: str
    schedule: Any  # a prefect.client.schemas.schedules object
    first: datetime | None = None  # the one-off time (kind "once")


def _zone_name(tz: tzinfo) -> str:
    return str(getattr(tz, "key", None) or tz)


def parse_at(text: str, *, tz: tzinfo, now: datetime) -> datetime:
    """``--at`` text → UTC instant: ``HH:MM`` is the next such local time, else a date-time.

    A date-time without offset is local time in ``tz`` (like ``--since``); one in the past
    is an error, not "run now".
    """
    value = text.strip()
    hhmm = _HHMM_RE.match(value)
    if hhmm:
        hour, minute = int(hhmm[1]), int(hhmm[2])
        if hour > 23 or minute > 59:
            raise BadInput(f"bad time {text!r}: write HH:MM (00:00 to 23:59)")
        local_now = now.astimezone(tz)
        candidate = datetime.combine(local_now.date(), time(hour, minute), tzinfo=tz)
        if candidate <= local_now:
            candidate = datetime.combine(
                local_now.date() + timedelta(days=1), time(hour, minute), tzinfo=tz
            )
        return candidate.astimezone(UTC)
    try:
        instant = windows.parse_instant(value, tz=tz)
    except ValueError:
        raise BadInput(
            f"bad time {text!r}: write HH:MM, YYYY-MM-DD HH:MM or an ISO time with offset"
        ) from None
    if instant <= now:
        shown = windows.describe_instant(instant, tz)
        raise BadInput(f"--at {text!r} ({shown}) is in the past: give a time to come")
    return instant


def parse_cadence(
    *,
    at: str | None = None,
    in_: str | None = None,
    cron: str | None = None,
    every: str | None = None,
    tz: str | None = None,
    now: datetime | None = None,
) -> Cadence:
    """The one cadence the options describe (exactly one of ``at``/``in_``/``cron``/``every``)."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
    from pydantic import ValidationError

    given = [n for n, v in (("--at", at), ("--in", in_), ("--cron", cron), ("--every", every)) if v]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        raise BadInput(
            f"give exactly one of --at TIME, --in DURATION, --cron EXPR or --every DURATION "
            f"(got {what})"
        )
    now = (now or datetime.now(UTC)).astimezone(UTC)
    try:
        zone = windows.resolve_zone(tz)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    zname = _zone_name(zone)
    if cron:
        schedule: Any
        try:
            schedule = CronSchedule(cron=cron.strip(), timezone=zname)
        except ValidationError:
            raise BadInput(
                f"bad cron {cron!r}: write five fields (minute hour day month weekday), "
                "e.g. '0 2 * * *' or '30 7 * * 1-5'"
            ) from None
        return Cadence("cron", f"cron {cron.strip()}", zname, schedule)
    if every:
        try:
            step = windows.parse_duration(every)
        except ValueError as exc:
            raise BadInput(str(exc).replace("bad duration", "bad --every")) from None
        if step < timedelta(minutes=1):
            raise BadInput(f"--every {every!r} is too often: use at least 1m")
        schedule = IntervalSchedule(interval=step, anchor_date=now + step, timezone=zname)
        return Cadence("every", f"every {every.strip()}", zname, schedule)
    if in_:
        try:
            delay = windows.parse_duration(in_)
        except ValueError as exc:
            raise BadInput(str(exc).replace("bad duration", "bad --in")) from None
        if delay <= timedelta(0):
            raise BadInput(f"--in {in_!r} is not in the future: use e.g. 10m or 2h")
        first = now + delay
    else:
        assert at is not None
        first = parse_at(at, tz=zone, now=now)
    # A one-off schedule: an RRULE that fires once (Prefect has no "once" schedule).
    stamp = first.astimezone(zone).strftime("%Y%m%dT%H%M%S")
    schedule = RRuleSchedule(rrule=f"DTSTART:{stamp}\nRRULE:FREQ=DAILY;COUNT=1", timezone=zname)
    text = f"once at {windows.describe_instant(first, zone)}"
    return Cadence("once", text, zname, schedule, first=first)


def next_runs(schedule: Any, *, now: datetime, n: int = NEXT_RUNS) -> list[datetime]:
    """The next ``n`` times of a Prefect schedule, computed as the server's scheduler does."""
    from prefect.server.schemas import schedules as server_schedules

    kind = type(schedule).__name__
    server_cls = getattr(server_schedules, kind, None)
    if server_cls is None:
        return []
    server_schedule = server_cls.model_validate(schedule.model_dump())
    out = []
    for when in server_schedule._get_dates_generator(n=n, start=now):
        out.append(datetime.fromtimestamp(when.timestamp(), tz=UTC))
    return out


def describe_schedule(schedule: Any) -> tuple[str, str]:
    """How a Prefect schedule reads in the list (``cron 0 2 * * *``), and its zone."""
    zone = getattr(schedule, "timezone", None) or "UTC"
    if hasattr(schedule, "cron"):
        return f"cron {schedule.cron}", zone
    if hasattr(schedule, "interval"):
        seconds = int(schedule.interval.total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"every {seconds // size}{unit}", zone
        return f"every {seconds}s", zone
    rrule = getattr(schedule, "rrule", "")
    if "COUNT=1" in rrule:
        match = re.search(r"DTSTART[^:]*:(\d{8}T\d{6})", rrule)
        if match:
            when = datetime.strptime(match[1], "%Y%m%dT%H%M%S")
            return f"once at {when:%Y-%m-%d %H:%M}", zone
    return f"rrule {rrule}", zone


# --- validation shared with ``wsjobs run`` -------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """A validated job to create: the flow, its parameters and tags."""

    action: str
    flow: Any
    parameters: dict[str, Any]
    owner: str
    info: str

    @property
    def tags(self) -> list[str]:
        return runmeta.job_tags(action=self.action, owner=self.owner)

    @property
    def name(self) -> str:
        return runmeta.job_name(self.action, self.info)


def job_spec(
    action: str,
    *,
    target: Sequence[str],
    params: Mapping[str, str] | None = None,
    info: str = "",
    owner: str | None = None,
) -> JobSpec:
    """Validate exactly as ``wsjobs run`` does; raise before anything is created."""
    from workspaces_jobs.catalog import load_actions, load_inventory
    from workspaces_jobs.flows.action import default_owner
    from workspaces_jobs.jobs import flow_for

    flow, fixed = flow_for(action)
    load_inventory().resolve(target)
    yaml_actions = load_actions()
    bound = (
        yaml_actions[action].bind_params(params) if action in yaml_actions else dict(params or {})
    )
    owner = default_owner(owner)
    parameters = {**fixed, "target": list(target), "params": bound, "info": info, "owner": owner}
    return JobSpec(action, flow, parameters, owner, info)


def entrypoint(flow: Any) -> str:
    """``flows/<module>.py:<function>`` for a flow of this project (what a worker loads)."""
    from workspaces_jobs.deploy import project_root

    fn = inspect.unwrap(flow.fn)  # job flows wrap the action's function (flows/action.py)
    source = Path(fn.__code__.co_filename).resolve()
    try:
        relative = source.relative_to(project_root())
    except ValueError:
        raise BadInput(
            f"action flow {flow.name!r} lives outside workspaces-jobs ({source}): "
            "schedule it with a prefect.yaml deployment instead"
        ) from None
    return f"{relative.as_posix()}:{fn.__name__}"


def _deploy(
    client: Any,
    flow: Any,
    *,
    name: str,
    parameters: dict[str, Any],
    tags: list[str],
    description: str,
    schedules: list[Any],
) -> Any:
    settings = get_settings()
    ensure_pool(client, settings.work_pool)
    flow_id = client.create_flow(flow)
    return client.create_deployment(
        flow_id=flow_id,
        name=name,
        parameters=parameters,
        tags=tags,
        description=description,
        entrypoint=entrypoint(flow),
        pull_steps=PULL_STEPS,
        work_pool_name=settings.work_pool,
        work_queue_name=settings.work_queue,
        schedules=schedules,
        paused=False,
        enforce_parameter_schema=False,
    )


def ensure_pool(client: Any, pool: str) -> None:
    """Create the process work pool ``pool`` if the server has none by that name."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        client.read_work_pool(pool)
    except ObjectNotFound:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass


def worker_warning(client: Any, *, now: datetime | None = None) -> str | None:
    """A one-line warning when no worker has polled the pool lately, else None."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    try:
        workers = client.read_workers_for_work_pool(settings.work_pool)
    except Exception:
        workers = []
    for w in workers:
        beat = w.last_heartbeat_time
        if beat is not None and now - beat <= WORKER_STALE:
            return None
    return (
        f"no worker is polling work pool {settings.work_pool!r} (queue "
        f"{settings.work_queue!r}): jobs will wait Pending until one runs - start one with "
        "`wsjobs worker` on a host that has workspaces-jobs installed"
    )


# --- schedules ---------------------------------------------------------------------------


@dataclass
class ScheduleInfo:
    """One schedule as ``wsjobs schedules`` and the web's Schedules page show it."""

    name: str
    deployment_id: str
    flow: str
    action: str
    target: list[str]
    params: dict[str, Any]
    info: str
    cadence: str
    timezone: str
    next_runs: list[datetime]
    paused: bool
    created_by: str
    warning: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.deployment_id,
            "flow": self.flow,
            "action": self.action,
            "target": self.target,
            "params": self.params,
            "info": self.info,
            "cadence": self.cadence,
            "timezone": self.timezone,
            "next_runs": [t.isoformat() for t in self.next_runs],
            "paused": self.paused,
            "created_by": self.created_by,
        }


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise BadInput(
            f"bad schedule name {name!r}: use letters, digits, '.', '_' or '-' (max 64), "
            "starting with a letter or digit"
        )
    return name


def create_schedule(
    action: str,
    *,
    target: Sequence[str],
    cadence: Cadence,
    params: Mapping[str, str] | None = None,
    info: str = "",
    owner: str | None = None,
    name: str | None = None,
    now: datetime | None = None,
    who: str | None = None,
    source: str | None = None,
) -> ScheduleInfo:
    """Validate, then create the deployment with its schedule; return what was created."""
    from workspaces_jobs import activity

    who, source = activity.actor(who or activity.context_who() or owner, source)
    info_ = _create_schedule(
        action, target=target, cadence=cadence, params=params, info=info,
        owner=owner or who, name=name, now=now,
    )  # fmt: skip
    activity.record(
        who, "schedule-create", schedule=info_.name, source=source,
        detail=f"{action} on {', '.join(target)}, {cadence.text}",
    )  # fmt: skip
    return info_


def _create_schedule(
    action: str,
    *,
    target: Sequence[str],
    cadence: Cadence,
    params: Mapping[str, str] | None,
    info: str,
    owner: str | None,
    name: str | None,
    now: datetime | None,
) -> ScheduleInfo:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    from workspaces_jobs.server import ensure_api

    spec = job_spec(action, target=target, params=params, info=info, owner=owner)
    name = check_name(name or f"{action}-{uuid.uuid4().hex[:6]}")
    ensure_api()
    with get_client(sync_client=True) as client:
        if _find(client, name, required=False) is not None:
            raise BadInput(
                f"a schedule named {name!r} exists: pick another --name, or "
                f"`wsjobs schedules delete {name}` first"
            )
        deployment_id = _deploy(
            client,
            spec.flow,
            name=name,
            parameters=spec.parameters,
            # Prefect copies these onto every run the schedule makes: the history sync
            # records those runs' activity from the schedule tag (activity.record_scheduled).
            tags=[*spec.tags, f"{runmeta.SCHEDULE_TAG}{name}"],
            description=f"wsjobs schedule by {spec.owner}: {spec.name} ({cadence.text})",
            schedules=[DeploymentScheduleCreate(schedule=cadence.schedule, active=True)],
        )
        warning = worker_warning(client)
    return ScheduleInfo(
        name=name,
        deployment_id=str(deployment_id),
        flow=spec.flow.name,
        action=action,
        target=list(target),
        params=dict(spec.parameters["params"]),
        info=info,
        cadence=cadence.text,
        timezone=cadence.timezone,
        next_runs=next_runs(cadence.schedule, now=now or datetime.now(UTC)),
        paused=False,
        created_by=spec.owner,
        warning=warning,
    )


def _job_deployments(client: Any) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    return list(
        client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[runmeta.JOB_TAG])),
            limit=200,
        )
    )


def _info(deployment: Any, flows: Mapping[Any, str], now: datetime) -> ScheduleInfo:
    tags = deployment.tags or []
    params = deployment.parameters or {}
    schedules = [s for s in (deployment.schedules or []) if s.active]
    cadence, zone, upcoming = "-", "-", []
    if schedules:
        cadence, zone = describe_schedule(schedules[0].schedule)
        upcoming = sorted(t for s in schedules for t in next_runs(s.schedule, now=now))[:NEXT_RUNS]
        if len(schedules) > 1:
            cadence += f" (+{len(schedules) - 1} more)"
    flow = flows.get(deployment.flow_id, "")
    action = runmeta.tag_value(tags, runmeta.ACTION_TAG) or str(params.get("action") or flow)
    return ScheduleInfo(
        name=deployment.name,
        deployment_id=str(deployment.id),
        flow=flow,
        action=action,
        target=list(params.get("target") or []),
        params=dict(params.get("params") or {}),
        info=str(params.get("info") or ""),
        cadence=cadence,
        timezone=zone,
        next_runs=upcoming,
        paused=bool(deployment.paused),
        created_by=runmeta.tag_value(tags, runmeta.OWNER_TAG) or str(params.get("owner") or "-"),
    )


def list_schedules(*, now: datetime | None = None) -> list[ScheduleInfo]:
    """Every job deployment with a schedule (``wsjobs schedule`` and ``prefect.yaml``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterId

    from workspaces_jobs.server import ensure_api

    ensure_api()
    now = now or datetime.now(UTC)
    with get_client(sync_client=True) as client:
        deployments = [d for d in _job_deployments(client) if d.schedules]
        flow_ids = list({d.flow_id for d in deployments})
        flows = (
            {
                f.id: f.name
                for f in client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=flow_ids)))
            }
            if flow_ids
            else {}
        )
    out = [_info(d, flows, now) for d in deployments]
    return sorted(out, key=lambda s: s.name)


def _find(client: Any, name: str, *, required: bool = True) -> Any:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    found = list(
        client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
        )
    )
    found = [d for d in found if runmeta.JOB_TAG in (d.tags or []) and d.schedules]
    if not found:
        if required:
            raise NotFound(f"no schedule named {name!r}: see `wsjobs schedules`")
        return None
    if len(found) > 1:
        raise BadInput(f"{len(found)} schedules are named {name!r}: manage them in the Prefect UI")
    return found[0]


def _change(
    name: str, verb: Callable[[Any, Any], None], action: str, who: str | None, source: str | None
) -> str:
    from prefect.client.orchestration import get_client

    from workspaces_jobs import activity
    from workspaces_jobs.server import ensure_api

    who, source = activity.actor(who, source)
    ensure_api()
    with get_client(sync_client=True) as client:
        deployment = _find(client, name)
        verb(client, deployment)
    activity.record(who, action, schedule=name, source=source)
    return str(deployment.id)


def pause_schedule(name: str, *, who: str | None = None, source: str | None = None) -> str:
    """Stop new runs (Prefect removes the runs it pre-created and has not started)."""
    return _change(name, lambda c, d: c.pause_deployment(d.id), "schedule-pause", who, source)


def resume_schedule(name: str, *, who: str | None = None, source: str | None = None) -> str:
    """Runs are created again from the next due time."""
    return _change(name, lambda c, d: c.resume_deployment(d.id), "schedule-resume", who, source)


def delete_schedule(name: str, *, who: str | None = None, source: str | None = None) -> str:
    """Delete the schedule and its future runs; jobs that ran stay (and their history)."""
    return _change(name, lambda c, d: c.delete_deployment(d.id), "schedule-delete", who, source)


# --- later one-off jobs ----------------------------------------------------------------------


def submit_later(spec: JobSpec, when: datetime) -> tuple[str, str | None]:
    """A Pending job that the worker starts at ``when``; return its id and any warning."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Scheduled

    from workspaces_jobs.server import ensure_api

    ensure_api()
    settings = get_settings()
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"{spec.flow.name}/{RUN_DEPLOYMENT}")
            same = (
                deployment.work_pool_name == settings.work_pool
                and deployment.work_queue_name == settings.work_queue
                and deployment.entrypoint == entrypoint(spec.flow)
            )
            deployment_id = deployment.id if same else None
        except ObjectNotFound:
            deployment_id = None
        if deployment_id is None:
            deployment_id = _deploy(
                client,
                spec.flow,
                name=RUN_DEPLOYMENT,
                parameters={},
                tags=[],
                description="Later one-off jobs of wsjobs run --at/--in (no schedule).",
                schedules=[],
            )
        flow_run = client.create_flow_run_from_deployment(
            deployment_id,
            parameters=spec.parameters,
            name=spec.name,
            tags=spec.tags,
            state=Scheduled(scheduled_time=when),
        )
        warning = worker_warning(client)
    return str(flow_run.id), warning
