"""The list view's request: URL query parameters ⇄ a JobQuery, plus paging. Pure.

The page's state lives in its URL (bookmarkable, back-button friendly): ``filter`` (a
predefined or saved filter), one parameter per field of the filter registry
(:data:`~workspaces_jobs.reporting.fields.FILTER_FIELDS`: ``age``, ``since``, ``until``,
``status``, ``owner``, ``action``, ``device``, ``q``, ``search_logs``, ``started_over``,
``sort``, ``dir``, ``limit``, ``columns``, ``tz``) and ``page``. Nothing here names a
field by hand except the two the page draws specially (status chips, sortable headers).
Every value reaches SQL as a parameter through :mod:`workspaces_jobs.reporting.filters`;
this module only moves strings around and never writes SQL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from workspaces_jobs.reporting.fields import FIELDS_BY_NAME, FILTER_FIELDS, FilterField
from workspaces_jobs.reporting.filters import FilterSpec
from workspaces_jobs.status import JobStatus, parse_status

#: The age filter's choices, in the product's order ("All" for filters without a window).
AGES: tuple[tuple[str, str], ...] = (
    ("today", "Today"),
    ("week", "This week"),
    ("month", "This month"),
    ("quarter", "This quarter"),
    ("year", "This year"),
    ("all", "All"),
)

#: Query parameters that describe the list (everything but ``page``).
STATE_KEYS = ("filter", *(f.url_param for f in FILTER_FIELDS))

#: Rows per page when the view settings say "no limit".
FALLBACK_PAGE_SIZE = 50
#: The deepest page served; rows before a page are fetched to reach it (see ``page_plan``).
MAX_PAGE = 1000


def _one(params: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = [v.strip() for v in params.get(key, ()) if v and v.strip()]
    return values[-1] if values else None


def _many(params: Mapping[str, Sequence[str]], key: str) -> tuple[str, ...]:
    out: list[str] = []
    for value in params.get(key, ()):
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return tuple(dict.fromkeys(out))


def _parse(f: FilterField, params: Mapping[str, Sequence[str]], problems: list[str]) -> Any:
    """One field's value from the query string (None/() when absent or unusable)."""
    key = f.url_param
    if f.kind in ("many", "columns"):
        values = _many(params, key)
        if f.name != "statuses":
            return values
        slugs = []
        for text in values:
            try:
                slugs.append(parse_status(text).slug)
            except ValueError as exc:
                problems.append(str(exc))
        return tuple(dict.fromkeys(slugs))
    if f.kind == "bool":
        direction = (_one(params, key) or "").lower()
        desc = {"desc": True, "asc": False}.get(direction)
        if direction and desc is None:
            problems.append(f"bad sort direction {direction!r}: use asc or desc")
        return desc
    if f.kind == "int":
        raw = _one(params, key)
        if raw is None:
            return None
        if not raw.isdigit():
            problems.append(f"bad {key} {raw!r}: use a whole number (0 = no limit)")
            return None
        return int(raw)
    if f.name == "search":  # the text as typed (spaces matter), the last non-blank one
        return next((v for v in reversed(params.get(key, ())) if v.strip()), None)
    value = _one(params, key)
    return value.lower() if value and f.name == "age" else value


@dataclass(frozen=True)
class ListRequest:
    """What the user asked the list for (raw strings, validated by the filter code).

    ``values`` holds the filter registry's fields that are set, by FilterSpec name.
    """

    filter: str | None = None
    values: tuple[tuple[str, Any], ...] = ()
    page: int = 1
    problems: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> ListRequest:
        """From ``{key: [values]}`` (query string or form); unusable bits become problems."""
        problems: list[str] = []
        page = 1
        raw_page = _one(params, "page")
        if raw_page is not None:
            if raw_page.isdigit() and 1 <= int(raw_page) <= MAX_PAGE:
                page = int(raw_page)
            else:
                problems.append(f"bad page {raw_page!r}: use a number from 1 to {MAX_PAGE}")
        values = []
        for f in FILTER_FIELDS:
            value = _parse(f, params, problems)
            if value not in (None, ()):
                values.append((f.name, value))
        return cls(
            filter=_one(params, "filter"),
            values=tuple(values),
            page=page,
            problems=tuple(problems),
        )

    def get(self, name: str) -> Any:
        """A field's value by FilterSpec name (None or () when unset)."""
        for key, value in self.values:
            if key == name:
                return value
        return () if FIELDS_BY_NAME[name].kind in ("many", "columns") else None

    @property
    def search(self) -> str | None:
        value: str | None = self.get("search")
        return value

    @property
    def statuses(self) -> tuple[str, ...]:
        value: tuple[str, ...] = self.get("statuses")
        return value

    def text(self, name: str) -> str:
        """A field as the web control shows it (lists comma-joined, unset → "")."""
        value = self.get(name)
        if isinstance(value, tuple):
            return ",".join(value)
        if value is None:
            return ""
        return str(value)

    def with_values(self, **changes: Any) -> ListRequest:
        """A copy with some fields (by FilterSpec name) set or, given None/(), cleared."""
        current = dict(self.values)
        for key, value in changes.items():
            if key not in FIELDS_BY_NAME:
                raise KeyError(key)
            if value in (None, ()):
                current.pop(key, None)
            else:
                current[key] = value
        ordered = tuple((f.name, current[f.name]) for f in FILTER_FIELDS if f.name in current)
        return replace(self, values=ordered)

    def fields(self) -> dict[str, Any]:
        """Keyword fields for :class:`JobQuery` (only those set; the rest come from the
        named filter and the view settings)."""
        return dict(self.values)

    def spec(self) -> FilterSpec:
        """The request's own fields as a filter (validated: errors name the fix)."""
        return FilterSpec.make(**self.fields())

    def pairs(self, *, page: bool = False) -> list[tuple[str, str]]:
        """``(name, value)`` pairs that reproduce this request (hidden inputs, links)."""
        out: list[tuple[str, str]] = []
        if self.filter:
            out.append(("filter", self.filter))
        for name, value in self.values:
            f = FIELDS_BY_NAME[name]
            if isinstance(value, tuple):
                out += [(f.url_param, v) for v in value]
            elif f.kind == "bool":
                out.append((f.url_param, "desc" if value else "asc"))
            else:
                out.append((f.url_param, str(value)))
        if page and self.page != 1:
            out.append(("page", str(self.page)))
        return out

    def url(self, **changes: Any) -> str:
        """``/?...`` for this request with some fields changed; back to page 1 unless
        ``page`` is given (a new filter starts at its first page)."""
        page = changes.pop("page", 1)
        other = replace(self, page=page)
        if "filter" in changes:
            other = replace(other, filter=changes.pop("filter"))
        other = other.with_values(**changes)
        query = urlencode(other.pairs(page=True))
        return f"/?{query}" if query else "/"

    def toggle_status(self, slug: str) -> str:
        statuses = tuple(s for s in self.statuses if s != slug)
        if len(statuses) == len(self.statuses):
            statuses = (*self.statuses, slug)
        return self.url(statuses=statuses)

    def sort_url(self, column: str, current: str, current_desc: bool) -> str:
        """Click a header: sort by it (newest/largest first); click again to flip."""
        desc = not current_desc if column == current else True
        return self.url(sort=column, desc=desc)


def status_slug(status: str) -> str:
    """CSS/URL spelling of a stored status label (``Completed with errors`` → slug)."""
    try:
        return JobStatus(status).slug
    except ValueError:
        return "unknown"


@dataclass(frozen=True)
class Page:
    """Paging arithmetic: which rows page ``number`` shows out of ``total``."""

    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def first_row(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last_row(self) -> int:
        return min(self.offset + self.size, self.total)

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def page_size(limit: int | None) -> int:
    return limit if limit else FALLBACK_PAGE_SIZE


def slice_page(rows: Iterable[dict[str, Any]], page: Page) -> list[dict[str, Any]]:
    """The rows of ``page`` out of the first ``page.number * page.size`` rows."""
    return list(rows)[page.offset : page.offset + page.size]
