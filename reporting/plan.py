"""``Plan``: a resolved jobs query and the SQL it writes.

:class:`~workspaces_jobs.reporting.query.JobQuery` resolves a query into a plan; the
list, the exports (:mod:`.export`) and the faces' counts (:mod:`.reader`) write their SQL
from it. It sits here, below all of them, so none imports another for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from workspaces_jobs.reporting.filters import (
    DEFAULT_SORT,
    DEVICE_AGGREGATES,
    Column,
    FilterSpec,
    Where,
    sort_words,
)

#: The extra column of :meth:`Plan.sql` with ``total=True``.
TOTAL = "_total"


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

    def sql(
        self, *, columns: tuple[str, ...] | None = None, limit: bool = True, total: bool = False
    ) -> str:
        """The list query in one statement (device aggregates joined when needed);
        ``total`` adds a column ``_total``: how many rows match without the limit."""
        cols = self.columns if columns is None else columns
        source = self.source
        if self.uses_aggregates(cols):
            source += f" LEFT JOIN ({DEVICE_AGGREGATES} GROUP BY d.job_id) da ON da.job_id = j.id"
        counted = f', count(*) OVER () AS "{TOTAL}"' if total else ""
        text = (
            f"SELECT {self.select_list(cols)}{counted} FROM {source} "
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
