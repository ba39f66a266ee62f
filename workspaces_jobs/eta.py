"""Time left for a running job, from the same action's past durations per device and step.

How it is computed (the words :func:`describe` prints say the same):

1. From the history, for the job's action: the **median** duration of each (device,
   step) over its last :data:`RECENT` successful runs, kept only with at least
   :data:`MIN_SAMPLES` runs. A (device, step) with too few runs falls back to that step's
   median over every device (again at least :data:`MIN_SAMPLES` runs).
2. For each device of the job: the running step's median minus the time it has run
   already (never below zero), plus the medians of its steps not started yet. Steps come
   from the job's own task runs, and for a device that has not started, from the steps
   the history saw for that action.
3. Devices run side by side (at most ``WSJOBS_MAX_PARALLEL`` at once), so the job's time
   left is the larger of the slowest device's time left and the total divided by the
   parallelism.

No estimate when any remaining step has no usable history, when the job is not In
progress, or when there is no step list. Pure except :func:`history_durations` (SQL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import median
from typing import Any

from workspaces_jobs.jobfacts import JobFact
from workspaces_jobs.status import JobStatus

#: Past runs a (device, step) median needs.
MIN_SAMPLES = 3
#: Past runs used per (device, step): the most recent ones.
RECENT = 20


@dataclass(frozen=True)
class Durations:
    """Median seconds per (device, step), per step over all devices, and step order."""

    per_device: Mapping[tuple[str, str], float]
    per_step: Mapping[str, float]
    order: tuple[str, ...]  # the action's steps by position, as the history saw them


@dataclass(frozen=True)
class Estimate:
    seconds: float
    devices: int
    fallback: int  # remaining steps estimated from the step's median over all devices


def history_durations(con: Any, action: str, *, exclude: str | None = None) -> Durations:
    """The medians for ``action`` from the history's ``steps`` (successful runs only)."""
    rows = (
        con.cursor()
        .execute(
            """
            WITH runs AS (
                SELECT s.device, s.step, s.position,
                       epoch(s.ended) - epoch(s.started) AS secs,
                       row_number() OVER (PARTITION BY s.device, s.step
                                          ORDER BY s.started DESC) AS rn
                FROM steps s JOIN jobs j ON j.id = s.job_id
                WHERE j.action = $action AND s.status = 'Completed'
                  AND s.started IS NOT NULL AND s.ended IS NOT NULL
                  AND j.id <> $exclude
            )
            SELECT device, step, min(position), list(secs)
            FROM runs WHERE rn <= $recent GROUP BY device, step
            """,
            {"action": action, "exclude": exclude or "", "recent": RECENT},
        )
        .fetchall()
    )
    per_device: dict[tuple[str, str], float] = {}
    by_step: dict[str, list[float]] = {}
    positions: dict[str, int] = {}
    for device, step, position, secs in rows:
        values = [float(v) for v in secs if v is not None]
        by_step.setdefault(step, []).extend(values)
        if position is not None:
            positions[step] = min(positions.get(step, position), position)
        if len(values) >= MIN_SAMPLES:
            per_device[(device, step)] = median(values)
    per_step = {s: median(v) for s, v in by_step.items() if len(v) >= MIN_SAMPLES}
    order = tuple(sorted(positions, key=lambda s: positions[s]))
    return Durations(per_device, per_step, order)


def estimate_job(
    job: JobFact,
    stats: Durations,
    *,
    now: datetime | None = None,
    parallel: int | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Estimate | None:
    """Seconds left for ``job`` (In progress) from ``stats``; None without enough history."""
    if job.status != JobStatus.IN_PROGRESS.value:
        return None
    if parallel is None:
        from workspaces_jobs.settings import get_settings

        parallel = get_settings().max_parallel
    now = now or clock()
    steps_of: dict[str, dict[str, Any]] = {}
    for s in job.steps:
        steps_of.setdefault(s.device, {})[s.step] = s
    devices = sorted({d.device for d in job.devices} | set(steps_of))
    if not devices or not stats.order:
        return None
    lefts: list[float] = []
    fallback = 0
    for device in devices:
        left = 0.0
        done = steps_of.get(device, {})
        for step in stats.order:
            fact = done.get(step)
            if fact is not None and fact.ended is not None:
                continue
            if fact is not None and fact.status not in (None, "Running", "Pending", "Scheduled"):
                continue
            expected = stats.per_device.get((device, step))
            if expected is None:
                expected = stats.per_step.get(step)
                if expected is None:
                    return None
                fallback += 1
            if fact is not None and fact.started is not None:
                expected = max(0.0, expected - (now - fact.started).total_seconds())
            left += expected
        lefts.append(left)
    seconds = max(max(lefts), sum(lefts) / max(1, parallel))
    return Estimate(seconds, len(devices), fallback)


def fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def describe(estimate: Estimate | None) -> str | None:
    """The words shown next to the progress bar (None: show nothing)."""
    if estimate is None:
        return None
    how = f"median of the last {RECENT} runs of each step on each device"
    if estimate.fallback:
        how += f"; {estimate.fallback} step(s) from the step's median over all devices"
    return f"about {fmt_seconds(estimate.seconds)} left ({how})"


def durations_from_history(action: str, *, exclude: str | None = None) -> Durations | None:
    """The medians for ``action`` from the configured history file, or None when the file
    is missing or busy (never waits: an estimate must not hold up ``show`` or ``run``)."""
    from workspaces_jobs.reporting.store import StoreError, open_store

    try:
        with open_store(None, read_only=True, timeout=0, on_wait=lambda _m: None) as con:
            return history_durations(con, action, exclude=exclude)
    except (StoreError, OSError):
        return None
    except Exception:  # a history file from another version: no estimate, no failure
        return None


def job_eta_text(job: JobFact) -> str | None:
    """The estimate line for a job, read from the history (None without one)."""
    if job.status != JobStatus.IN_PROGRESS.value:
        return None
    stats = durations_from_history(job.action, exclude=job.id)
    return describe(estimate_job(job, stats)) if stats else None
