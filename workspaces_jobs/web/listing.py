"""The list view's request: URL query parameters ⇄ a JobQuery, plus paging. Pure.

The page's state lives in its URL (bookmarkable, back-button friendly): ``filter`` (a
predefined or saved filter), ``age``, ``q`` (search over any column), ``status``
(repeatable), ``owner``, ``action``, ``device``, ``sort``, ``dir`` and ``page``. Every
value reaches SQL as a parameter through :mod:`workspaces_jobs.reporting.filters`; this
module only moves strings around and never writes SQL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

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
STATE_KEYS = ("filter", "age", "q", "status", "owner", "action", "device", "sort", "dir")

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


@dataclass(frozen=True)
class ListRequest:
    """What the user asked the list for (raw strings, validated by the filter code)."""

    filter: str | None = None
    age: str | None = None
    search: str | None = None
    statuses: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    sort: str | None = None
    desc: bool | None = None
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
        direction = (_one(params, "dir") or "").lower()
        desc = {"desc": True, "asc": False}.get(direction)
        if direction and desc is None:
            problems.append(f"bad sort direction {direction!r}: use asc or desc")
        statuses = []
        for text in _many(params, "status"):
            try:
                statuses.append(parse_status(text).slug)
            except ValueError as exc:
                problems.append(str(exc))
        search = next((v for v in reversed(params.get("q", ())) if v.strip()), None)
        return cls(
            filter=_one(params, "filter"),
            age=(_one(params, "age") or "").lower() or None,
            search=search,
            statuses=tuple(dict.fromkeys(statuses)),
            owners=_many(params, "owner"),
            actions=_many(params, "action"),
            devices=_many(params, "device"),
            sort=_one(params, "sort"),
            desc=desc,
            page=page,
            problems=tuple(problems),
        )

    def fields(self) -> dict[str, Any]:
        """Keyword fields for :class:`JobQuery` (only those set; the rest come from the
        named filter and the view settings)."""
        out: dict[str, Any] = {}
        for key, value in (
            ("age", self.age),
            ("search", self.search),
            ("statuses", self.statuses),
            ("owners", self.owners),
            ("actions", self.actions),
            ("devices", self.devices),
            ("sort", self.sort),
            ("desc", self.desc),
        ):
            if value not in (None, ()):
                out[key] = value
        return out

    def spec(self) -> FilterSpec:
        """The request's own fields as a filter (validated: errors name the fix)."""
        return FilterSpec.make(**self.fields())

    def pairs(self, *, page: bool = False) -> list[tuple[str, str]]:
        """``(name, value)`` pairs that reproduce this request (hidden inputs, links)."""
        out: list[tuple[str, str]] = []
        if self.filter:
            out.append(("filter", self.filter))
        if self.age:
            out.append(("age", self.age))
        if self.search is not None:
            out.append(("q", self.search))
        out += [("status", s) for s in self.statuses]
        out += [("owner", s) for s in self.owners]
        out += [("action", s) for s in self.actions]
        out += [("device", s) for s in self.devices]
        if self.sort:
            out.append(("sort", self.sort))
        if self.desc is not None:
            out.append(("dir", "desc" if self.desc else "asc"))
        if page and self.page != 1:
            out.append(("page", str(self.page)))
        return out

    def url(self, **changes: Any) -> str:
        """``/?...`` for this request with some fields changed; back to page 1 unless
        ``page`` is given (a new filter starts at its first page)."""
        changes.setdefault("page", 1)
        other = replace(self, **changes)
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
