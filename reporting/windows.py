"""Time windows for the jobs list: THE one place that turns "this week" into instants.

A window is a half-open interval ``[start, end)`` of UTC instants, computed from the
calendar of the user's time zone: ``today`` starts at local midnight, ``week`` on Monday
00:00, ``month``/``quarter``/``year`` on the first day of the period. Bounds are built as
local wall-clock times with a :mod:`zoneinfo` zone and then converted to UTC, so a window
that spans a DST change is 23 or 25 hours long, as it is on the user's clock. A local
midnight that does not exist (zones that change at 00:00) resolves to the first instant
of that day.

Everything takes an injectable ``now`` (default :func:`workspaces_jobs.clock.now`, which
``WSJOBS_NOW`` pins for processes a test cannot pass it to) so tests can stand on any
date; the filters pass the bounds to SQL as ``$parameters`` (never ``now()`` in SQL),
which keeps one rule.

**Which instant of a job a window looks at** (:data:`RUN_TIME_SQL`, also the default
sort): when the job runs — its start, or while it has not started (Pending, or canceled
before it ran) its expected start, falling back to its creation. Prefect creates the runs
of a schedule days ahead, so counting from creation put next week's nightly runs under
"today" and left out the one that ran at 02:00; by run time, a run pre-created beyond the
window is outside it, and the "upcoming" filter lists the next ones.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from workspaces_jobs import clock
from workspaces_jobs.errors import BadInput

#: When a job runs (see the module docstring): the instant windows and the default sort use.
RUN_TIME_SQL = "coalesce(j.started, j.expected_start, j.created)"

#: The calendar windows users can pick with ``--age``.
AGES = ("today", "week", "month", "quarter", "year", "all")

#: Log lines come after their job was created; this margin covers clock skew between
#: the hosts that write them, when a log search is cut to the job window.
LOG_SKEW = timedelta(hours=1)

_AGE_WORDS = {
    "today": "today",
    "week": "this week",
    "month": "this month",
    "quarter": "this quarter",
    "year": "this year",
    "all": "at any time",
}


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in UTC; ``None`` means unbounded on that side."""

    start: datetime | None
    end: datetime | None
    label: str

    def contains(self, instant: datetime) -> bool:
        return (self.start is None or instant >= self.start) and (
            self.end is None or instant < self.end
        )


def system_zone_name() -> str:
    """The IANA name of the machine's zone (``TZ``, ``/etc/localtime``, ``/etc/timezone``).

    Python's ``datetime.now().astimezone()`` gives only a fixed offset, which would be
    wrong on the other side of a DST change, hence the name lookup. Falls back to UTC.
    """
    env = os.environ.get("TZ", "").lstrip(":")
    if env and _is_zone(env):
        return env
    try:
        target = os.path.realpath("/etc/localtime")
        match = re.search(r"zoneinfo/(.+)$", target)
        if match and _is_zone(match.group(1)):
            return match.group(1)
    except OSError:
        pass
    try:
        name = Path("/etc/timezone").read_text().strip()
        if _is_zone(name):
            return name
    except OSError:
        pass
    return "UTC"


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def resolve_zone(name: str | None) -> ZoneInfo:
    """``--tz`` value → zone; ``None`` or empty → the system zone. One-line error if unknown."""
    name = (name or "").strip() or system_zone_name()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Paris or UTC"
        ) from None


def _local_midnight(day: date, tz: tzinfo) -> datetime:
    """The first UTC instant of ``day`` on the local calendar."""
    local = datetime.combine(day, time(0), tzinfo=tz)
    instant = local.astimezone(UTC)
    # A non-existent midnight (gap) maps past the gap; an ambiguous one (fold=0) is
    # the earlier of the two, i.e. the start of the day. Both are what a user means.
    return instant


def _period_start(local_today: date, age: str) -> date:
    if age == "today":
        return local_today
    if age == "week":
        return local_today - timedelta(days=local_today.weekday())
    if age == "month":
        return local_today.replace(day=1)
    if age == "quarter":
        return date(local_today.year, 3 * ((local_today.month - 1) // 3) + 1, 1)
    if age == "year":
        return date(local_today.year, 1, 1)
    raise BadInput(f"unknown age {age!r}: use one of {', '.join(AGES)}")


def _next_period(start: date, age: str) -> date:
    if age == "today":
        return start + timedelta(days=1)
    if age == "week":
        return start + timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[age]
    index = start.month - 1 + months
    return date(start.year + index // 12, index % 12 + 1, 1)


def age_window(age: str, *, tz: tzinfo, now: datetime | None = None) -> Window:
    """The calendar window ``age`` (one of :data:`AGES`) that contains ``now``."""
    age = age.strip().lower()
    if age not in AGES:
        raise BadInput(f"unknown age {age!r}: use one of {', '.join(AGES)}")
    if age == "all":
        return Window(None, None, _AGE_WORDS[age])
    now = now or clock.now()
    local = now.astimezone(tz)
    # A plain date, also when ``now`` is a Prefect (pendulum) datetime.
    local_today = date(local.year, local.month, local.day)
    first = _period_start(local_today, age)
    return Window(
        _local_midnight(first, tz),
        _local_midnight(_next_period(first, age), tz),
        _AGE_WORDS[age],
    )


#: Dates users may give (``--since``/``--until``): wide enough for any real job, narrow
#: enough that a day added for ``--until`` or a zone shift can never overflow.
MIN_DATE = date(1970, 1, 1)
MAX_DATE = date(2999, 12, 31)
#: Longest duration (``--started-over``): a century; ``999999999d`` overflows timedelta.
MAX_DURATION = timedelta(days=36525)


def _check_day(day: date, text: str) -> None:
    if not MIN_DATE <= day <= MAX_DATE:
        raise BadInput(f"date {text!r} is out of range: use a date from {MIN_DATE} to {MAX_DATE}")


def parse_instant(text: str, *, tz: tzinfo, end: bool = False) -> datetime:
    """``--since``/``--until`` text → UTC instant.

    A date (``2026-11-23``) means local midnight; with ``end=True`` it means the end of
    that day (the next local midnight), so ``--until 2026-11-23`` includes the 23rd. A
    datetime without offset is local wall-clock time; with an offset it is taken as is.
    """
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            parsed = datetime.combine(date.fromisoformat(value), time(0))
            whole_day = True
        else:
            parsed = datetime.fromisoformat(value.replace(" ", "T", 1))
            whole_day = False
    except ValueError:
        raise BadInput(
            f"bad date {text!r}: write YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
        ) from None
    _check_day(parsed.date(), text)
    if whole_day:
        day = parsed.date()
        return _local_midnight(day + timedelta(days=1) if end else day, tz)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90m``, ``1h30m``, ``2d`` → timedelta (for "in progress longer than ...")."""
    value = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise BadInput(f"bad duration {text!r}: write e.g. 30m, 1h, 1h30m or 2d")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not seconds <= MAX_DURATION.total_seconds():  # also catches inf from 400 digits
        raise BadInput(f"duration {text!r} is too long: at most {MAX_DURATION.days}d (a century)")
    return timedelta(seconds=seconds)


def ago(duration: timedelta, *, now: datetime | None = None) -> datetime:
    """``now - duration`` in UTC: relative bounds ("started more than 1h ago")."""
    return (now or clock.now()).astimezone(UTC) - duration


def describe_instant(instant: datetime, tz: tzinfo) -> str:
    """How a bound reads in a description: local time, seconds only when needed."""
    local = instant.astimezone(tz)
    if local.time() == time(0):
        return local.strftime("%Y-%m-%d")
    fmt = "%Y-%m-%d %H:%M" if local.second == 0 else "%Y-%m-%d %H:%M:%S"
    return local.strftime(fmt)
