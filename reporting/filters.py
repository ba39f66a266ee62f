"""Filters are data: a :class:`FilterSpec` becomes SQL text, ``$parameters`` and a description.

This is the only module that writes the WHERE clause of the jobs list, the device
history and the exports. Rules (see docs/jobs-list.md):

- user text is always a parameter; substring search is ``ILIKE $p ESCAPE '\\'`` with
  ``\\``, ``%`` and ``_`` escaped, so searching ``50%`` finds "50%" and not everything;
- column and sort names come from :data:`COLUMNS` (an allowlist of SQL expressions);
- time windows come from :mod:`.windows` (one place) and reach SQL as parameters;
- a spec is validated when it is built or saved (:meth:`FilterSpec.validated`), so a
  saved filter with an unknown status or column is rejected at save time.

Everything here is pure (no DuckDB), so it is table-tested: spec → (SQL, params, text).
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, tzinfo
from typing import Any

from workspaces_jobs.errors import BadInput
from workspaces_jobs.reporting import windows
from workspaces_jobs.reporting.fields import (  # noqa: F401 (re-exported: one registry)
    COLUMNS,
    DEVICE_AGGREGATES,
    DEVICE_COLUMNS,
    FILTER_FIELDS,
    ME,
    SEARCH_COLUMNS,
    Column,
    WhereBuild,
    contains_pattern,
    escape_like,
    ilike,
)
from workspaces_jobs.status import JobStatus, parse_status

DEFAULT_COLUMNS = (
    "id",
    "action",
    "info",
    "status",
    "reason",
    "owner",
    "run_at",
    "started",
    "ended",
    "progress",
    "devices_ok",
    "devices_failed",
)
DEFAULT_DEVICE_COLUMNS = (
    "id",
    "action",
    "info",
    "owner",
    "created",
    "status",
    "device_status",
    "device_steps_ok",
    "device_steps_failed",
    "device_started",
    "device_ended",
)
DEFAULT_SORT = "run_at"
DEFAULT_AGE = "today"
DEFAULT_LIMIT = 50

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

#: Largest ``--limit``: far above any list a person reads, far below DuckDB's BIGINT.
MAX_LIMIT = 1_000_000_000


def _tuple(values: Iterable[str] | str | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = values.split(",")
    return tuple(v.strip() for v in values if v and v.strip())


def parse_columns(
    text: Iterable[str] | str | None, *, extra: Mapping[str, Column] | None = None
) -> tuple[str, ...]:
    """``a,b,c`` → allowlisted column names (one-line error naming the good ones)."""
    names = _tuple(text)
    allowed = {**COLUMNS, **(extra or {})}
    for name in names:
        if name not in allowed:
            raise BadInput(f"unknown column {name!r}: use some of {', '.join(allowed)}")
    return names


def _yes_no(value: object) -> str:
    text = str(value).strip().lower()
    if text in ("yes", "y", "true", "1"):
        return "yes"
    if text in ("no", "n", "false", "0"):
        return "no"
    raise BadInput(f"bad recovered value {value!r}: use yes or no")


@dataclass(frozen=True)
class FilterSpec:
    """What the user asked for; every field optional; saved as JSON in ``saved_filters``.

    Lists are OR within a field; fields are ANDed. ``age`` None means "the view's default
    age", unless ``since``/``until`` are given (then only those bounds apply).
    """

    age: str | None = None
    since: str | None = None
    until: str | None = None
    statuses: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    search: str | None = None
    search_logs: str | None = None
    started_over: str | None = None  # "started more than X ago", e.g. 1h
    recovered: str | None = None  # "yes" / "no": recovered after inactivity
    stopped_by: tuple[str, ...] = ()  # canceled or killed by (the activity log's verified who)
    sort: str | None = None
    desc: bool | None = None
    limit: int | None = None
    columns: tuple[str, ...] | None = None
    tz: str | None = None

    @classmethod
    def make(cls, **values: Any) -> FilterSpec:
        """Build from loose values (CLI options, JSON), normalised and validated."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise BadInput(
                f"unknown filter field(s) {', '.join(sorted(unknown))}: "
                f"use some of {', '.join(sorted(known))}"
            )
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if value is None or value == () or value == []:
                continue
            if key in ("statuses", "owners", "actions", "devices", "stopped_by"):
                value = _tuple(value)
                if not value:
                    continue
            elif key == "columns":
                value = _tuple(value)
            elif isinstance(value, str) and key not in ("search", "search_logs"):
                value = value.strip() or None
            clean[key] = value
        # Device-history columns are accepted here; each query then checks its own set.
        return cls(**clean).validated(extra_columns=DEVICE_COLUMNS)

    def validated(self, *, extra_columns: Mapping[str, Column] | None = None) -> FilterSpec:
        """Check every field and normalise spellings; ``ValueError`` names the fix."""
        statuses = tuple(dict.fromkeys(parse_status(s).value for s in self.statuses))
        if self.age is not None and self.age.lower() not in windows.AGES:
            raise BadInput(f"unknown age {self.age!r}: use one of {', '.join(windows.AGES)}")
        zone = windows.resolve_zone(self.tz) if self.tz else None
        probe_zone = zone or windows.resolve_zone("UTC")
        if self.since:
            windows.parse_instant(self.since, tz=probe_zone)
        if self.until:
            windows.parse_instant(self.until, tz=probe_zone, end=True)
        if self.started_over:
            windows.parse_duration(self.started_over)
        for text, flag in ((self.search, "--search"), (self.search_logs, "--search-logs")):
            if text is not None and text == "":
                raise BadInput(f"{flag} needs some text")
        allowed = {**COLUMNS, **(extra_columns or {})}
        if self.sort is not None:
            col = allowed.get(self.sort)
            if col is None or not col.sortable:
                good = ", ".join(n for n, c in allowed.items() if c.sortable)
                raise BadInput(f"cannot sort by {self.sort!r}: use one of {good}")
        if self.columns is not None:
            parse_columns(self.columns, extra=extra_columns)
            if not self.columns:
                raise BadInput("--columns needs at least one column name")
        if self.limit is not None and (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int)
            or not 0 <= self.limit <= MAX_LIMIT
        ):
            raise BadInput(
                f"bad limit {self.limit!r}: use a whole number from 0 to {MAX_LIMIT:,}"
                " (0 = no limit)"
            )
        recovered = _yes_no(self.recovered) if self.recovered is not None else None
        return replace(
            self,
            statuses=statuses,
            age=self.age.lower() if self.age else None,
            recovered=recovered,
        )

    def refined(self, other: FilterSpec) -> FilterSpec:
        """This filter with every field ``other`` sets replaced (``--filter X --status ...``)."""
        changes = {
            f.name: getattr(other, f.name)
            for f in fields(self)
            if getattr(other, f.name) not in (None, ())
        }
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The stored form: only the fields that are set, lists as lists."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None or value == ():
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilterSpec:
        return cls.make(**dict(data))


@dataclass(frozen=True)
class Where:
    """A WHERE clause over ``jobs j``: SQL text, its parameters, and what it means."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    parts: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return ", ".join(self.parts) if self.parts else "all jobs"


def build_where(
    spec: FilterSpec,
    *,
    tz: tzinfo,
    now: datetime | None = None,
    default_age: str = DEFAULT_AGE,
    user: Callable[[], str] = getpass.getuser,
) -> Where:
    """Turn a (validated) spec into SQL over ``jobs j``; ``now`` is injectable for tests."""
    b = WhereBuild(spec, tz=tz, now=now, default_age=default_age, user=user)
    for f in FILTER_FIELDS:
        if f.where is None:
            continue
        value = getattr(spec, f.name)
        if f.name == "age" or value not in (None, ()):
            f.where(b)
    return Where(" AND ".join(b.conds) if b.conds else "TRUE", b.params, tuple(b.parts))


def order_by(spec: FilterSpec, *, extra_columns: Mapping[str, Column] | None = None) -> str:
    """``ORDER BY`` text from the allowlist; ties broken by id so pages are stable."""
    allowed = {**COLUMNS, **(extra_columns or {})}
    name = spec.sort or DEFAULT_SORT
    col = allowed[name]
    direction = "DESC" if (spec.desc if spec.desc is not None else True) else "ASC"
    return f"{col.sql} {direction} NULLS LAST, j.id {direction}"


def sort_words(spec: FilterSpec) -> str:
    name = spec.sort or DEFAULT_SORT
    desc = spec.desc if spec.desc is not None else True
    return f"sorted by {name} {'descending' if desc else 'ascending'}"


#: Filters every user has; saved filters cannot take these names.
PREDEFINED: dict[str, FilterSpec] = {
    "errors-this-week": FilterSpec(age="week", statuses=(JobStatus.ERROR.value,)),
    "completed-with-errors": FilterSpec(
        age="all", statuses=(JobStatus.COMPLETED_WITH_ERRORS.value,)
    ),
    "pending": FilterSpec(age="all", statuses=(JobStatus.PENDING.value,)),
    "in-progress-too-long": FilterSpec(
        age="all", statuses=(JobStatus.IN_PROGRESS.value,), started_over="1h"
    ),
    "my-jobs-today": FilterSpec(age="today", owners=(ME,)),
    # Jobs you canceled or killed (the activity log's verified actor, issue 18).
    "canceled-by-me": FilterSpec(age="all", stopped_by=(ME,)),
    "failed-or-canceled": FilterSpec(
        age="all", statuses=(JobStatus.ERROR.value, JobStatus.CANCELED.value)
    ),
    # The next jobs to run (schedules' pre-created runs, later one-off jobs), soonest first.
    "upcoming": FilterSpec(
        age="all", statuses=(JobStatus.PENDING.value,), sort="run_at", desc=False
    ),
}


def check_filter_name(name: str) -> str:
    """A saved filter's name: lower-case words with ``-``/``_``, not a predefined one."""
    if not _NAME.fullmatch(name):
        raise BadInput(
            f"bad filter name {name!r}: use lower-case letters, digits, '-' or '_' (max 64)"
        )
    if name in PREDEFINED:
        raise BadInput(f"cannot save as {name!r}: it is a predefined filter, pick another name")
    return name
