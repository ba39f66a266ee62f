"""``JobQuery``: the jobs list as a Python object — rows, counts and exports.

The CLI (``wsjobs list/device/export``), notebooks and the web view share this object,
so a filter means the same thing everywhere::

    from workspaces_jobs.reporting.query import JobQuery

    q = JobQuery(status="error", age="week", search="openssl")
    q.description          # 'run this week, status is Error, any column contains "openssl"'
    q.rows()               # list of dicts, newest first, the view's columns
    q.count()              # how many match (no limit)
    q.export("xlsx", "errors.xlsx", with_steps=True)
    JobQuery("errors-this-week").where(owner="bob").rows()   # a saved/predefined filter, refined
    JobQuery(history_of="dev01").rows()                      # what ran on one device

How a query is resolved: the named filter (predefined or saved), refined by the keyword
fields, then the view settings (``wsjobs view``) fill what is still unset (columns, sort,
age, limit, time zone). ``limit=0`` means no limit; exports ignore the view's default
limit and write every matching row unless a limit was asked for explicitly.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workspaces_jobs.reporting import windows
from workspaces_jobs.reporting.filters import (
    COLUMNS,
    DEFAULT_DEVICE_COLUMNS,
    DEVICE_AGGREGATES,
    DEVICE_COLUMNS,
    Column,
    FilterSpec,
    build_where,
    order_by,
)
from workspaces_jobs.reporting.plan import TOTAL, Plan

_ALIASES = {"status": "statuses", "owner": "owners", "action": "actions", "device": "devices"}


def _fields(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        key = _ALIASES.get(key, key)
        if key in ("statuses", "owners", "actions", "devices", "stopped_by") and isinstance(
            value, str
        ):
            value = [value]
        out[key] = value
    return out


class JobQuery:
    """A filter over the history plus how to show it; cheap to build, immutable."""

    def __init__(
        self,
        filter: str | FilterSpec | None = None,
        *,
        path: Path | str | None = None,
        con: Any = None,
        history_of: str | None = None,
        now: datetime | None = None,
        user: Callable[[], str] = getpass.getuser,
        **fields: Any,
    ) -> None:
        self._filter = filter
        self._path = path
        self._con = con
        self._history_of = history_of
        self._now = now
        self._user = user
        self._refine = FilterSpec.make(**_fields(fields)) if fields else FilterSpec()

    def where(self, **fields: Any) -> JobQuery:
        """A copy with more fields set (each replaces the same field of the filter)."""
        other = JobQuery(
            self._filter,
            path=self._path,
            con=self._con,
            history_of=self._history_of,
            now=self._now,
            user=self._user,
        )
        other._refine = self._refine.refined(FilterSpec.make(**_fields(fields)))
        return other

    @contextmanager
    def connection(self, *, pinned: bool = True) -> Iterator[Any]:
        """The connection given, or a read-only open of the history for this call; that
        one is ``pinned`` to one snapshot (one read transaction) unless told otherwise."""
        if self._con is not None:
            yield self._con
            return
        from workspaces_jobs.reporting.store import open_store, snapshot

        with open_store(self._path, read_only=True) as con:
            if not pinned:
                yield con
                return
            with snapshot(con) as one:
                yield one

    def plan(self, con: Any, *, for_export: bool = False) -> Plan:
        from workspaces_jobs.reporting.saved import get_filter, read_view

        base = self._filter
        if isinstance(base, str):
            base = get_filter(con, base)
        spec = (base or FilterSpec()).refined(self._refine)
        view = read_view(con)
        tz = windows.resolve_zone(spec.tz or view.tz)
        allowed: dict[str, Column] = dict(COLUMNS)
        default_columns = view.columns
        default_age = view.age
        if self._history_of:
            allowed.update(DEVICE_COLUMNS)
            default_columns = DEFAULT_DEVICE_COLUMNS
            default_age = "all"
        spec = replace(
            spec,
            sort=spec.sort or view.sort,
            desc=spec.desc if spec.desc is not None else view.desc,
        ).validated(extra_columns=allowed)
        columns = spec.columns or default_columns
        if "id" not in columns:
            columns = ("id", *columns)  # rows are always identifiable (and joinable)
        if spec.limit is not None:
            limit: int | None = spec.limit or None
        else:
            limit = None if for_export else (view.limit or None)
        where = build_where(spec, tz=tz, now=self._now, default_age=default_age, user=self._user)
        return Plan(
            spec=spec,
            where=where,
            columns=tuple(columns),
            allowed=allowed,
            order=order_by(spec, extra_columns=allowed),
            limit=limit,
            tz=tz,
            history_of=self._history_of,
        )

    @property
    def description(self) -> str:
        with self.connection() as con:
            return self.plan(con).description

    def rows(self) -> list[dict[str, Any]]:
        """The page the list shows: dicts keyed by column name, Python values."""
        with self.connection() as con:
            return page_rows(con, self.plan(con))

    def count(self) -> int:
        """How many jobs match, ignoring the limit."""
        with self.connection() as con:
            plan = self.plan(con)
            row = con.cursor().execute(plan.count_sql(), plan.params).fetchone()
            return int(row[0]) if row else 0

    def export(
        self,
        fmt: str | None,
        path: Path | str,
        *,
        with_steps: bool = False,
        with_logs: bool = False,
        progress: Callable[[int, int], None] | None = None,
        raw_csv: bool = False,
    ) -> Any:
        """Write every matching row (not just a page) to ``path``; see :mod:`.export`."""
        from workspaces_jobs.reporting.export import export_plan

        with self.connection(pinned=False) as con:  # exports stream several results
            plan = self.plan(con, for_export=True)
            return export_plan(
                con,
                plan,
                fmt,
                Path(path),
                with_steps=with_steps,
                with_logs=with_logs,
                progress=progress,
                raw_csv=raw_csv,
            )


def _fetch_dicts(con: Any, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    cur = con.cursor().execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def page_rows(con: Any, plan: Plan) -> list[dict[str, Any]]:
    """A limited page: one top-N statement, or two steps when device aggregates are shown.

    One statement because every statement on the DuckLake history first reads the lake's
    catalog (~5 ms CPU each, measured in ``benchmarks/history.py``), and DuckDB's top-N
    reads only the page's rows in full (late materialisation), so the ids-then-columns
    split saved nothing. With device aggregates (the ``devices`` column, or a sort by one)
    the page's ids come first and only their ``job_devices`` rows are aggregated:
    aggregating every ``job_devices`` row before the top-N is ~10x slower on 1M jobs.
    """
    if not plan.limit or not plan.uses_aggregates():
        return _fetch_dicts(con, plan.sql(), plan.params)
    ids = [row[0] for row in con.cursor().execute(_ids_sql(plan), plan.params).fetchall()]
    return _rows_for_ids(con, plan, ids)


def _ids_sql(plan: Plan, *, total: bool = False) -> str:
    source = plan.source
    if plan.sort_column.aggregate:
        source += f" LEFT JOIN ({DEVICE_AGGREGATES} GROUP BY d.job_id) da ON da.job_id = j.id"
    counted = ", count(*) OVER () AS _total" if total else ""
    return (
        f"SELECT j.id{counted} FROM {source} WHERE {plan.where.sql} "
        f"ORDER BY {plan.order} LIMIT {int(plan.limit or 0)}"
    )


def _rows_for_ids(con: Any, plan: Plan, ids: list[Any]) -> list[dict[str, Any]]:
    if not ids:
        return []
    rows = _fetch_dicts(con, plan.rows_for_ids_sql(), {**plan.params_for_source, "page_ids": ids})
    by_id = {row["id"]: row for row in rows}
    return [by_id[i] for i in ids if i in by_id]


def page_and_total(con: Any, plan: Plan) -> tuple[list[dict[str, Any]], int]:
    """The page and how many rows match in all.

    A log search (the one expensive predicate: a scan of every log line) and a device's
    history (a join) get both from one statement, ``count(*) OVER ()`` beside the top N:
    one scan for page and total. Other filters get a top-N statement and, only when the
    page is full, a count: on 1M jobs with most of them matching (``--age all``) the
    window count materialises every match and cost 2-3x the CPU of a separate count,
    measured on both stores (``benchmarks/history.py``). With device aggregates: ids
    (and the total) first, then the page's columns (see :func:`page_rows`).
    """
    if not plan.limit:
        rows = _fetch_dicts(con, plan.sql(), plan.params)
        return rows, len(rows)
    one_scan = plan.spec.search_logs is not None or plan.history_of is not None
    if one_scan and plan.uses_aggregates():
        found = con.cursor().execute(_ids_sql(plan, total=True), plan.params).fetchall()
        rows = _rows_for_ids(con, plan, [r[0] for r in found])
        return rows, int(found[0][1]) if found else 0
    if one_scan:
        rows = _fetch_dicts(con, plan.sql(total=True), plan.params)
        total = int(rows[0][TOTAL]) if rows else 0
        for row in rows:
            del row[TOTAL]
        return rows, total
    rows = page_rows(con, plan)
    total = len(rows)
    if total >= plan.limit:
        found = con.cursor().execute(plan.count_sql(), plan.params).fetchone()
        total = int(found[0]) if found else total
    return rows, total


def json_value(value: Any) -> Any:
    """Rows as JSON: times as ISO 8601 in UTC, everything else as is."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: json_value(v) for k, v in row.items()} for row in rows]
