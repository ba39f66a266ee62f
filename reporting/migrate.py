"""Carry a history of the one-DuckDB-file era (``history.duckdb``) into the DuckLake history.

Public surface::

    from workspaces_jobs.reporting.migrate import migrate_file

    result = migrate_file(Path("~/.local/share/workspaces-jobs/history.duckdb"))
    result.tables  # {"jobs": (rows in the old file, of them found in the new history), ...}

Why it is built this way:

* **The old file is only read** (attached read-only), so it stays as it was: a user can
  keep using it with an older version, or run the migration again.
* **Idempotent**: rows go in by key (:data:`reporting.rows.KEYS`, the other tables' own
  keys below, or the whole row for a table this module does not know), only those not in
  the new history yet. A second run adds nothing, and rows a sync wrote since are kept.
* **Counts verified**: after the one transaction commits, every old row must be found in
  the new history by its key; a shortfall raises :class:`StoreError` naming the table.
* Columns are carried by name (the intersection of old and new), so an old file of an
  earlier schema migrates too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from workspaces_jobs.reporting import rows as R
from workspaces_jobs.reporting.store import (
    StoreError,
    locate,
    open_store,
    writer_lock,
)

#: Keys of the tables :data:`reporting.rows.KEYS` does not cover.
OTHER_KEYS: dict[str, tuple[str, ...]] = {
    "saved_filters": ("name",),
    "view_settings": ("key",),
    "sync_state": ("source",),
}
#: The new history keeps its own migration record.
SKIP = {"schema_version"}


@dataclass
class MigrateResult:
    old: Path
    history: str
    #: table -> (rows in the old file, rows added now, old rows found in the new history)
    tables: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    #: old tables or columns the new history has no place for
    dropped: list[str] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(added for _, added, _ in self.tables.values())


def migrate_file(
    old: Path | str,
    history: Path | str | None = None,
    *,
    timeout: float | None = None,
) -> MigrateResult:
    """Copy every row of ``old`` into the history at ``history`` (default: the configured
    one), creating it if needed; see the module doc."""
    old = Path(old).expanduser().absolute()
    if not old.is_file():
        raise StoreError(f"no old history file at {old}: give --from PATH of a history.duckdb")
    with old.open("rb") as fh:
        if fh.read(16)[8:12] != b"DUCK":
            raise StoreError(f"{old} is not a DuckDB file: give --from PATH of a history.duckdb")
    loc = locate(history)
    if loc.kind == "sqlite" and Path(loc.catalog) == old:
        raise StoreError(
            f"the history ({old}) is the old file itself: set WSJOBS_HISTORY (or --history) to"
            " a new path, e.g. history.ducklake, and migrate into it"
        )
    result = MigrateResult(old=old, history=loc.display)
    with writer_lock(loc, timeout=timeout), open_store(history, timeout=timeout) as con:
        cur = con.cursor()
        try:
            cur.execute(f"ATTACH '{_quote(str(old))}' AS _old (READ_ONLY)")
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise StoreError(f"cannot read {old}: {first}") from exc
        try:
            plan = _plan(cur, result)
            cur.execute("BEGIN TRANSACTION")
            try:
                added = {t: _copy(cur, t, cols, key) for t, (cols, key) in plan.items()}
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            for table, (_cols, key) in plan.items():
                total, found = _verify(cur, table, key)
                result.tables[table] = (total, added[table], found)
                if found != total:
                    raise StoreError(
                        f"migration check failed: {table} has {total} rows in {old} but"
                        f" {found} of them in the new history; nothing was deleted, run again"
                    )
        finally:
            cur.execute("DETACH _old")
    return result


def _plan(
    cur: duckdb.DuckDBPyConnection, result: MigrateResult
) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """table -> (columns to copy, key) for every old table the new history has."""

    def columns(db: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        rows = cur.execute(
            "SELECT c.table_name, c.column_name FROM duckdb_columns() c"
            " JOIN duckdb_tables() t USING (database_name, schema_name, table_name)"  # no views
            " WHERE c.database_name = $db AND c.schema_name = 'main' ORDER BY c.column_index",
            {"db": db},
        ).fetchall()
        for table, column in rows:
            found.setdefault(table, []).append(column)
        return found

    current = cur.execute("SELECT current_database()").fetchone()
    old_cols, new_cols = columns("_old"), columns(str(current[0]) if current else "")
    plan = {}
    for table, cols in old_cols.items():
        if table in SKIP:
            continue
        if table not in new_cols:
            result.dropped.append(table)
            continue
        common = [c for c in cols if c in new_cols[table]]
        result.dropped.extend(f"{table}.{c}" for c in cols if c not in new_cols[table])
        key = R.KEYS.get(table) or OTHER_KEYS.get(table) or tuple(common)
        if not set(key) <= set(common):
            key = tuple(common)
        plan[table] = (common, key)
    return plan


def _match(key: tuple[str, ...]) -> str:
    return " AND ".join(f'n."{k}" IS NOT DISTINCT FROM o."{k}"' for k in key)


def _copy(cur: duckdb.DuckDBPyConnection, table: str, cols: list[str], key: tuple[str, ...]) -> int:
    names = ", ".join(f'"{c}"' for c in cols)
    picked = ", ".join(f'o."{c}"' for c in cols)
    cur.execute(
        f'CREATE OR REPLACE TEMP TABLE _missing AS SELECT {picked} FROM _old.main."{table}" o'
        f' WHERE NOT EXISTS (SELECT 1 FROM "{table}" n WHERE {_match(key)})'
    )
    row = cur.execute("SELECT count(*) FROM _missing").fetchone()
    count = int(row[0]) if row else 0
    if count:
        cur.execute(f'INSERT INTO "{table}" ({names}) SELECT {names} FROM _missing')
    cur.execute("DROP TABLE _missing")
    return count


def _verify(cur: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...]) -> tuple[int, int]:
    total = cur.execute(f'SELECT count(*) FROM _old.main."{table}"').fetchone()
    found = cur.execute(
        f'SELECT count(*) FROM _old.main."{table}" o'
        f' WHERE EXISTS (SELECT 1 FROM "{table}" n WHERE {_match(key)})'
    ).fetchone()
    return (int(total[0]) if total else 0), (int(found[0]) if found else 0)


def _quote(text: str) -> str:
    return text.replace("'", "''")
