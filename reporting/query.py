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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from workspaces_jobs.reporting import windows
from workspaces_jobs.reporting.filters import (
    COLUMNS,
    DEFAULT_DEVICE_COLUMNS,
    DEFAULT_SORT,
    DEVICE_AGGREGATES,
    DEVICE_COLUMNS,
    Column,
    FilterSpec,
    Where,
    build_where,
    order_by,
    sort_words,
)

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


@dataclass(frozen=True)
class Plan:
    """A resolved query: everything needed to write its SQL, and what it means."""

    spec: FilterSpec
    where: Where
    columns: tuple[str, ...]
    allowed: Mapping[str, Column]
    order: str
    limit: int | None  # None = no limit
    tz: ZoneInfo
    history_of: str | None

    @property
    def description(self) -> str:
        text = self.where.description
        if self.history_of:
            text = f"on device {self.history_of}, {text}"
        return f"{text}; {sort_words(self.spec)}"

    @property
    def params(self) -> dict[str, Any]:
        params = dict(self.where.params)
        if self.history_of:
            params["history_of"] = self.history_of
        return params

    @property
    def source(self) -> str:
        """``FROM`` text: the jobs, joined to one device's result in device history."""
        if self.history_of:
            return "jobs j JOIN job_devices dv ON dv.job_id = j.id AND dv.device = $history_of"
        return "jobs j"

    @property
    def sort_column(self) -> Column:
        return self.allowed[self.spec.sort or DEFAULT_SORT]

    def uses_aggregates(self, columns: tuple[str, ...] | None = None) -> bool:
        cols = self.columns if columns is None else columns
        return self.sort_column.aggregate or any(self.allowed[c].aggregate for c in cols)

    def select_list(self, columns: tuple[str, ...] | None = None) -> str:
        cols = self.columns if columns is None else columns
        return ", ".join(f'{self.allowed[c].sql} AS "{c}"' for c in cols)

    def sql(self, *, columns: tuple[str, ...] | None = None, limit: bool = True) -> str:
        """The list query in one statement (device aggregates joined when needed)."""
        cols = self.columns if columns is None else columns
        source = self.source
        if self.uses_aggregates(cols):
            source += f" LEFT JOIN ({DEVICE_AGGREGATES} GROUP BY d.job_id) da ON da.job_id = j.id"
        text = (
            f"SELECT {self.select_list(cols)} FROM {source} "
            f"WHERE {self.where.sql} ORDER BY {self.order}"
        )
        if limit and self.limit:
            text += f" LIMIT {int(self.limit)}"
        return text

    def count_sql(self) -> str:
        return f"SELECT count(*) FROM {self.source} WHERE {self.where.sql}"

    def selection_sql(self) -> str:
        """Job ids in list order (``ord``): what exports and detail tables join to."""
        source = self.source
        if self.sort_column.aggregate:
            source += f" LEFT JOIN ({DEVICE_AGGREGATES} GROUP BY d.job_id) da ON da.job_id = j.id"
        inner = (
            f"SELECT j.id, row_number() OVER (ORDER BY {self.order}) AS ord "
            f"FROM {source} WHERE {self.where.sql}"
        )
        if self.limit:
            return f"SELECT * FROM ({inner}) WHERE ord <= {int(self.limit)}"
        return inner

    @property
    def params_for_source(self) -> dict[str, Any]:
        return {"history_of": self.history_of} if self.history_of else {}

    def rows_for_ids_sql(self) -> str:
        """The columns of the jobs listed in ``$page_ids`` (primary-key lookups)."""
        source = self.source
        if self.uses_aggregates():
            source += (
                f" LEFT JOIN ({DEVICE_AGGREGATES} WHERE d.job_id IN (SELECT unnest($page_ids))"
                " GROUP BY d.job_id) da ON da.job_id = j.id"
            )
        return f"SELECT {self.select_list()} FROM {source} WHERE j.id IN (SELECT unnest($page_ids))"

    def selected_rows_sql(self, selection: str, *, with_ord: bool = False) -> str:
        """The export's rows: the columns of the jobs in table ``selection``, in list order."""
        source = f"{selection} s JOIN jobs j ON j.id = s.id"
        if self.history_of:
            source += " JOIN job_devices dv ON dv.job_id = j.id AND dv.device = $history_of"
        if self.uses_aggregates():
            source += (
                f" LEFT JOIN ({DEVICE_AGGREGATES} WHERE d.job_id IN (SELECT id FROM {selection})"
                " GROUP BY d.job_id) da ON da.job_id = j.id"
            )
        ord_col = "s.ord AS _ord, " if with_ord else ""
        return f"SELECT {ord_col}{self.select_list()} FROM {source} ORDER BY s.ord"


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
    """A limited page in two cheap steps: the ids of the page, then their columns.

    Sorting only ``(id, sort key)`` keeps the top-N small; the page's columns and its
    device counts are then read for those few ids through the primary key and the
    ``job_devices(job_id)`` index. Joining the device aggregates before the top-N would
    aggregate every ``job_devices`` row (~10x slower on 1M jobs, measured).
    """
    if not plan.limit:
        return _fetch_dicts(con, plan.sql(), plan.params)
    source = plan.source
    if plan.sort_column.aggregate:
        source += f" LEFT JOIN ({DEVICE_AGGREGATES} GROUP BY d.job_id) da ON da.job_id = j.id"
    ids_sql = (
        f"SELECT j.id FROM {source} WHERE {plan.where.sql} "
        f"ORDER BY {plan.order} LIMIT {int(plan.limit)}"
    )
    ids = [row[0] for row in con.cursor().execute(ids_sql, plan.params).fetchall()]
    if not ids:
        return []
    rows = _fetch_dicts(con, plan.rows_for_ids_sql(), {**plan.params_for_source, "page_ids": ids})
    by_id = {row["id"]: row for row in rows}
    return [by_id[i] for i in ids if i in by_id]


def page_and_total(con: Any, plan: Plan) -> tuple[list[dict[str, Any]], int]:
    """The page and how many rows match in all.

    A filter on the logs (``search_logs``) is the one expensive predicate: there the page's
    id query also counts every match (``count(*) OVER ()``), so the 10M-line scan runs
    once instead of once for the page and again for the total (measured in
    ``benchmarks/queries.py``). Other filters keep two cheap statements: a top-N and a
    count, which beat materialising every match for the window at 1M jobs.
    """
    if not plan.limit:
        rows = _fetch_dicts(con, plan.sql(), plan.params)
        return rows, len(rows)
    if plan.spec.search_logs is None:
        rows = page_rows(con, plan)
        total = len(rows)
        if total >= plan.limit:
            found = con.cursor().execute(plan.count_sql(), plan.params).fetchone()
            total = int(found[0]) if found else total
        return rows, total
    source = plan.source
    if plan.sort_column.aggregate:
        source += f" LEFT JOIN ({DEVICE_AGGREGATES} GROUP BY d.job_id) da ON da.job_id = j.id"
    ids_sql = (
        f"SELECT j.id, count(*) OVER () AS _total FROM {source} WHERE {plan.where.sql} "
        f"ORDER BY {plan.order} LIMIT {int(plan.limit)}"
    )
    found_ids = con.cursor().execute(ids_sql, plan.params).fetchall()
    if not found_ids:
        return [], 0
    ids = [r[0] for r in found_ids]
    rows = _fetch_dicts(con, plan.rows_for_ids_sql(), {**plan.params_for_source, "page_ids": ids})
    by_id = {row["id"]: row for row in rows}
    return [by_id[i] for i in ids if i in by_id], int(found_ids[0][1])


def json_value(value: Any) -> Any:
    """Rows as JSON: times as ISO 8601 in UTC, everything else as is."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: json_value(v) for k, v in row.items()} for row in rows]
