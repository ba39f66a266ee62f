"""Saved filters and view settings, stored in the history file (tables of migration 002).

Both are small JSON documents keyed by name. They are validated on the way in (a saved
filter with an unknown status or column is refused at save time) and again on the way
out, so a file edited by hand cannot smuggle an identifier into SQL.

The history is shared: a value stored by an older version (``view set --limit 2**66``
before limits were bounded) or by hand must not break the list for everyone. So reading
back validates **field by field**: a bad field is logged as a warning on this module's
logger (the CLI prints it as a ``warning:`` line, the web view's log shows it) and
ignored; the other fields still apply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from workspaces_jobs.errors import BadInput, NotFound
from workspaces_jobs.reporting import windows
from workspaces_jobs.reporting.filters import (
    COLUMNS,
    DEFAULT_AGE,
    DEFAULT_COLUMNS,
    DEFAULT_LIMIT,
    DEFAULT_SORT,
    PREDEFINED,
    FilterSpec,
    build_where,
    check_filter_name,
)

log = logging.getLogger(__name__)


def _clip(text: str, size: int = 40) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def stored_spec(name: str, raw: str) -> FilterSpec:
    """A saved filter read back: a field that does not validate is warned about and
    dropped, never fatal."""
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict):
        log.warning("saved filter %r is not readable and is ignored: save it again", name)
        return FilterSpec()
    try:
        return FilterSpec.from_json(data)
    except (TypeError, ValueError):
        pass
    good: dict[str, Any] = {}
    for key, value in data.items():
        try:
            FilterSpec.make(**{key: value})
        except (TypeError, ValueError) as exc:
            log.warning(
                "saved filter %r: its %s (%s) is ignored: %s; save the filter again",
                name,
                key,
                _clip(json.dumps(value)),
                _clip(str(exc), 120),
            )
            continue
        good[key] = value
    try:
        return FilterSpec.from_json(good)
    except (TypeError, ValueError) as exc:  # fields fine alone, not together
        log.warning("saved filter %r is ignored: %s; save it again", name, exc)
        return FilterSpec()


@dataclass(frozen=True)
class SavedFilter:
    name: str
    spec: FilterSpec
    description: str
    predefined: bool
    owner: str | None = None  # who saved it (None: predefined, or saved before migration 011)

    def to_json(self) -> dict[str, Any]:
        """As ``wsjobs filters --json`` and the JSON API show it."""
        return {
            "name": self.name,
            "predefined": self.predefined,
            "description": self.description,
            "spec": self.spec.to_json(),
            "owner": self.owner,
        }


def _describe(spec: FilterSpec) -> str:
    """What the filter itself says: without an age it takes the view's window when used,
    so no window is claimed here (the list's own description shows the one applied)."""
    tz = windows.resolve_zone(spec.tz or "UTC")
    where = build_where(spec, tz=tz, default_age="all", user=lambda: "you")
    return where.description.replace("you (you)", "you")


def list_filters(con: Any) -> list[SavedFilter]:
    """Predefined filters first, then the user's, by name."""
    out = [SavedFilter(n, s, _describe(s), True) for n, s in PREDEFINED.items()]
    rows = (
        con.cursor().execute("SELECT name, spec, owner FROM saved_filters ORDER BY name").fetchall()
    )
    for name, spec, owner in rows:
        parsed = stored_spec(name, spec)
        out.append(SavedFilter(name, parsed, _describe(parsed), False, owner))
    return out


def filter_owner(con: Any, name: str) -> tuple[bool, str | None]:
    """``(exists, owner)`` of a saved filter (a predefined one exists and has no owner)."""
    if name in PREDEFINED:
        return True, None
    row = (
        con.cursor()
        .execute("SELECT owner FROM saved_filters WHERE name = $n", {"n": name})
        .fetchone()
    )
    return (row is not None), (row[0] if row else None)


def get_filter(con: Any, name: str) -> FilterSpec:
    if name in PREDEFINED:
        return PREDEFINED[name]
    row = (
        con.cursor()
        .execute("SELECT spec FROM saved_filters WHERE name = $n", {"n": name})
        .fetchone()
    )
    if row is None:
        known = ", ".join(f.name for f in list_filters(con))
        raise NotFound(f"no filter named {name!r}: use one of {known}")
    return stored_spec(name, row[0])


def _recorded(con: Any, action: str, detail: str, who: str | None, source: str | None) -> None:
    """The change's activity row, in the connection the change was written with."""
    from workspaces_jobs import activity

    who, source = activity.actor(who, source)
    activity.record(who, action, source=source, detail=detail, con=con)


def save_filter(
    con: Any, name: str, spec: FilterSpec, *, who: str | None = None, source: str | None = None
) -> SavedFilter:
    """Validate and store (or replace) a filter; errors name the bad field. Its owner is
    the acting user (``who``, else the request's or the OS user); a replaced filter keeps
    its first owner."""
    from workspaces_jobs import activity

    check_filter_name(name)
    spec = spec.validated()
    if spec == FilterSpec():
        raise BadInput("an empty filter: give at least one of --status, --age, --search, ...")
    now = datetime.now(UTC)
    text = _describe(spec)
    who, source = activity.actor(who, source)
    with _transaction(con) as cur:  # the history has no ON CONFLICT: replace by name
        cur.execute(
            "CREATE OR REPLACE TEMP TABLE _was AS"
            " SELECT created, owner FROM saved_filters WHERE name = $n",
            {"n": name},
        )
        cur.execute("DELETE FROM saved_filters WHERE name = $n", {"n": name})
        cur.execute(
            "INSERT INTO saved_filters (name, spec, description, created, updated, owner) "
            "VALUES ($n, $s, $d, coalesce((SELECT min(created) FROM _was), $t), $t,"
            " coalesce((SELECT min(owner) FROM _was), $o))",
            {"n": name, "s": json.dumps(spec.to_json()), "d": text, "t": now, "o": who},
        )
        owner = cur.execute("SELECT owner FROM saved_filters WHERE name = $n", {"n": name})
        kept = owner.fetchone()
        cur.execute("DROP TABLE _was")
    _recorded(con, "filter-save", f"{name}: {text}", who, source)
    return SavedFilter(name, spec, text, False, kept[0] if kept else who)


def delete_filter(
    con: Any, name: str, *, who: str | None = None, source: str | None = None
) -> None:
    if name in PREDEFINED:
        raise BadInput(f"cannot delete {name!r}: predefined filters stay")
    cur = con.cursor()
    found = cur.execute(
        "SELECT count(*) FROM saved_filters WHERE name = $n", {"n": name}
    ).fetchone()
    if not found or not found[0]:
        raise NotFound(f"no saved filter named {name!r}: see `wsjobs filters`")
    cur.execute("DELETE FROM saved_filters WHERE name = $n", {"n": name})
    _recorded(con, "filter-delete", name, who, source)


# --- view settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewSettings:
    """Defaults of the jobs list; a filter or a flag overrides each of them."""

    columns: tuple[str, ...] = DEFAULT_COLUMNS
    sort: str = DEFAULT_SORT
    desc: bool = True
    age: str = DEFAULT_AGE
    limit: int = DEFAULT_LIMIT
    tz: str | None = None  # None = the system zone

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "sort": self.sort,
            "desc": self.desc,
            "age": self.age,
            "limit": self.limit,
            "tz": self.tz,
        }


VIEW_KEYS = ("columns", "sort", "desc", "age", "limit", "tz")


def _check_view(view: ViewSettings) -> ViewSettings:
    """Reuse the filter validation: same allowlists, same messages."""
    spec = FilterSpec.make(
        columns=view.columns, sort=view.sort, desc=view.desc, age=view.age, limit=view.limit
    )
    if view.tz:
        windows.resolve_zone(view.tz)
    assert spec.columns is not None
    return replace(view, columns=spec.columns, age=spec.age or DEFAULT_AGE)


def read_view(con: Any) -> ViewSettings:
    """The stored view settings; each bad one is warned about and left at its default."""
    rows = con.cursor().execute("SELECT key, value FROM view_settings").fetchall()
    stored: dict[str, Any] = {}
    for key, raw in rows:
        if key not in VIEW_KEYS:
            continue
        try:
            value = json.loads(raw)
            if key == "columns":
                value = tuple(c for c in value if c in COLUMNS) or DEFAULT_COLUMNS
            _check_view(replace(ViewSettings(), **{key: value}))
        except (TypeError, ValueError) as exc:
            log.warning(
                "view setting %s = %s is ignored (the default applies): %s;"
                " fix it with `wsjobs view set` or `wsjobs view reset`",
                key,
                _clip(str(raw)),
                _clip(str(exc), 120),
            )
            continue
        stored[key] = value
    try:
        return _check_view(ViewSettings(**stored))
    except (TypeError, ValueError):
        return ViewSettings()  # settings fine alone but not together


def set_view(
    con: Any, *, who: str | None = None, source: str | None = None, **changes: Any
) -> ViewSettings:
    """Change some settings (validated together); returns the new view."""
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(changes) - set(VIEW_KEYS)
    if unknown:
        raise BadInput(f"unknown view setting(s) {', '.join(sorted(unknown))}")
    if not changes:
        raise BadInput(
            "nothing to set: give --columns, --sort, --desc/--asc, --age, --limit or --tz"
        )
    if "columns" in changes:
        changes["columns"] = (
            tuple(c.strip() for c in str(changes["columns"]).split(",") if c.strip())
            if isinstance(changes["columns"], str)
            else tuple(changes["columns"])
        )
    view = _check_view(replace(read_view(con), **changes))
    now = datetime.now(UTC)
    with _transaction(con) as cur:  # the history has no ON CONFLICT: replace by key
        for key in changes:
            cur.execute("DELETE FROM view_settings WHERE key = $k", {"k": key})
            cur.execute(
                "INSERT INTO view_settings (key, value, updated) VALUES ($k, $v, $t)",
                {"k": key, "v": json.dumps(view.to_json()[key]), "t": now},
            )
    detail = ", ".join(f"{k}={json.dumps(view.to_json()[k])}" for k in changes)
    _recorded(con, "view-set", detail, who, source)
    return view


def reset_view(con: Any, *, who: str | None = None, source: str | None = None) -> ViewSettings:
    """Forget every view setting: the list is back to its built-in defaults."""
    # Only the settings: the '_nonempty' row stays (migration 009 says why).
    con.cursor().execute(
        "DELETE FROM view_settings WHERE key IN (SELECT unnest($keys))", {"keys": list(VIEW_KEYS)}
    )
    _recorded(con, "view-reset", "", who, source)
    return ViewSettings()


@contextmanager
def _transaction(con: Any) -> Iterator[Any]:
    """A cursor in one transaction: a delete-and-insert is seen whole or not at all."""
    cur = con.cursor()
    cur.execute("BEGIN TRANSACTION")
    try:
        yield cur
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
