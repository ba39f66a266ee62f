"""The history store: migrations, the DuckLake catalog, the sync lock (real DuckLake files)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from workspaces_jobs.reporting import store
from workspaces_jobs.reporting.store import (
    Migration,
    StoreError,
    StoreLocked,
    latest_version,
    open_store,
    schema_version,
)

PUBLIC_TABLES = {
    "jobs",
    "steps",
    "job_devices",
    "logs",
    "job_states",
    "notifications",
    "sync_state",
    "sync_jobs",
    "schema_version",
}


def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = (
        con.cursor()
        .execute("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()")
        .fetchall()
    )
    return {r[0] for r in rows}


def test_packaged_migrations_are_numbered_in_order() -> None:
    found = store.migrations()
    assert found[0].version == 1 and found[0].name == "history"
    assert [m.version for m in found] == sorted({m.version for m in found})


def test_create_migrates_and_records_version(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "h.duckdb"
    with open_store(path) as con:
        assert PUBLIC_TABLES <= tables(con)
        assert schema_version(con) == latest_version()
        views = {
            r[0] for r in con.cursor().execute("SELECT view_name FROM duckdb_views()").fetchall()
        }
        assert {"v_jobs", "v_device_history"} <= views
    with open_store(path) as con:  # reopening applies nothing twice
        rows = con.cursor().execute("SELECT version FROM schema_version").fetchall()
        assert [r[0] for r in rows] == [m.version for m in store.migrations()]


def test_new_migration_file_is_applied_on_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.duckdb"
    with open_store(path):
        pass
    extra = Migration(latest_version() + 1, "extra", "CREATE TABLE extra_t (a INTEGER);")
    packaged = store.migrations()
    monkeypatch.setattr(store, "migrations", lambda: [*packaged, extra])
    with open_store(path, read_only=True) as con:  # a reader triggers the pending migration
        assert "extra_t" in tables(con)
        assert schema_version(con) == extra.version


def test_a_migration_landed_out_of_order_is_still_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Numbers are reserved per issue and land in any order: a history that already has a
    higher version must still get a lower one it lacks (by set, not by "newer than max")."""
    path = tmp_path / "h.duckdb"
    with open_store(path):
        pass
    packaged = store.migrations()
    taken = {m.version for m in packaged}
    gap = next(v for v in range(1, latest_version()) if v not in taken)
    late = Migration(gap, "late", "CREATE TABLE late_t (a INTEGER);")
    monkeypatch.setattr(
        store, "migrations", lambda: sorted([*packaged, late], key=lambda m: m.version)
    )
    with open_store(path, read_only=True) as con:  # a reader triggers it too
        assert "late_t" in tables(con)
        versions = {
            r[0] for r in con.cursor().execute("SELECT version FROM schema_version").fetchall()
        }
        assert versions == {m.version for m in store.migrations()}
    with open_store(path) as con:  # and applies it once
        assert store.migrate(con) == []


def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "h.duckdb"
    with open_store(path):
        pass
    bad = Migration(
        latest_version() + 1, "bad", "CREATE TABLE half_t (a INTEGER); SELECT * FROM nowhere;"
    )
    packaged = store.migrations()
    monkeypatch.setattr(store, "migrations", lambda: [*packaged, bad])
    with pytest.raises(duckdb.Error):
        with open_store(path):
            pass
    monkeypatch.setattr(store, "migrations", lambda: packaged)
    with open_store(path) as con:
        assert "half_t" not in tables(con)
        assert schema_version(con) == packaged[-1].version


def test_new_history_is_created_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every migration of a new history commits at once: a failure leaves no table, and a
    created one has one schema version, so no superseded inlined-data table that a reader
    could have cached (the reason other migrations flush inlined rows)."""
    import sqlite3

    path = tmp_path / "h.ducklake"
    packaged = store.migrations()
    bad = Migration(latest_version() + 1, "bad", "SELECT * FROM nowhere;")
    monkeypatch.setattr(store, "migrations", lambda: [*packaged, bad])
    with pytest.raises(duckdb.Error):
        with open_store(path):
            pass
    monkeypatch.setattr(store, "migrations", lambda: packaged)
    half = store.connect(store.locate(path), read_only=True)  # looked at, not migrated
    try:
        assert tables(half) == set()
    finally:
        half.close()
    with open_store(path) as con:
        assert PUBLIC_TABLES <= tables(con)
        assert schema_version(con) == packaged[-1].version
    catalog = sqlite3.connect(path)
    try:
        names = [r[0] for r in catalog.execute("SELECT name FROM sqlite_master")]
    finally:
        catalog.close()
    inlined = [n for n in names if re.fullmatch(r"ducklake_inlined_data_\d+_\d+", n)]
    assert inlined and all(name.endswith("_1") for name in inlined), inlined


def test_reader_without_file_says_to_sync(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="run `wsjobs sync` first"):
        with open_store(tmp_path / "none.duckdb", read_only=True):
            pass


def test_history_is_a_ducklake_with_an_sqlite_catalog_in_wal_mode(tmp_path: Path) -> None:
    """WAL mode is what lets a reader hold a transaction while the sync commits."""
    path = tmp_path / "h.ducklake"
    with open_store(path) as con:
        kind = (
            con.cursor()
            .execute("SELECT type FROM duckdb_databases() WHERE database_name = current_database()")
            .fetchone()
        )
        assert kind == ("ducklake",)
    # Read in a child: two SQLite libraries in one process must not share a file.
    probe = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
         " print(db.execute('PRAGMA journal_mode').fetchone()[0],"
         " db.execute('SELECT count(*) FROM ducklake_snapshot').fetchone()[0] > 0)", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.split() == ["wal", "True"]
    assert (tmp_path / "h.ducklake.files").is_dir()


def test_old_duckdb_file_is_refused_with_the_migrate_command(tmp_path: Path) -> None:
    old = tmp_path / "history.duckdb"
    duckdb.connect(str(old)).close()
    with pytest.raises(StoreError, match="wsjobs history migrate --from"):
        with open_store(old):
            pass


HOLD = textwrap.dedent(
    """
    import sys, time
    from workspaces_jobs.reporting.store import writer_lock
    with writer_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_held_sync_lock_fails_a_second_writer_after_timeout_naming_holder(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.ducklake"
    with open_store(path):
        pass
    holder = hold_lock(path, 30)
    messages: list[str] = []
    try:
        start = time.monotonic()
        with pytest.raises(StoreLocked) as err:
            with store.writer_lock(path, timeout=0.6, on_wait=messages.append):
                pass
        assert time.monotonic() - start >= 0.6
        text = str(err.value)
        assert "\n" not in text
        assert f"PID {holder.pid}" in text and str(path) in text
        assert len(messages) == 1 and "waiting up to 0.6 s" in messages[0]
        # Readers never wait for the writer.
        start = time.monotonic()
        with open_store(path, read_only=True, timeout=0) as con:
            assert con.cursor().execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    finally:
        holder.kill()
        holder.wait()


def test_sync_lock_is_taken_once_released(tmp_path: Path) -> None:
    path = tmp_path / "h.ducklake"
    with open_store(path):
        pass
    holder = hold_lock(path, 0.5)
    messages: list[str] = []
    try:
        with store.writer_lock(path, timeout=20, on_wait=messages.append):
            pass
        assert len(messages) == 1
    finally:
        holder.wait()


def test_sync_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "h.ducklake"
    holder = hold_lock(path, 60)
    holder.kill()
    holder.wait()
    with store.writer_lock(path, timeout=0):
        pass
