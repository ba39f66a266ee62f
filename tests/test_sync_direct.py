"""The sync's direct path (the managed server's database file) stores exactly the rows the
API path stores: the API path is the reference, both read the same jobs on one server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from historyhelpers import audit_jobs_fixture  # noqa: F401  (the session fixture audit_jobs)

from workspaces_jobs.jobfacts import JobFact
from workspaces_jobs.reporting import direct
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.sync import sync_history

pytestmark = pytest.mark.usefixtures("prefect_server")

#: Each table of the history with the columns that order it; ``jobs.synced`` is the
#: sync's own clock and differs by design.
TABLES = {
    "jobs": "id",
    "steps": "id",
    "job_devices": "job_id, device",
    "logs": "id",
    "job_states": "id",
    "sync_jobs": "job_id",
}


def _rows(path: Path, table: str, ids: list[str]) -> list[tuple[Any, ...]]:
    key = "id" if table == "jobs" else "job_id"
    skip = " EXCLUDE (synced)" if table == "jobs" else ""
    with open_store(path, read_only=True) as con:
        return con.execute(
            f"SELECT *{skip} FROM {table} WHERE {key} IN (SELECT unnest($ids))"
            f" ORDER BY {TABLES[table]}",
            {"ids": ids},
        ).fetchall()


def test_direct_path_stores_the_rows_the_api_path_stores(
    audit_jobs: dict[str, JobFact], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = sorted(job.id for job in audit_jobs.values())
    later = datetime.now(UTC) + timedelta(minutes=5)  # past the settle window, not the late one

    monkeypatch.setenv("WSJOBS_SYNC_SOURCE", "api")
    api = sync_history(tmp_path / "api.duckdb", full=True, clock=lambda: later)
    assert api.read_path.startswith("read the Prefect API (WSJOBS_SYNC_SOURCE=api)")
    monkeypatch.setenv("WSJOBS_SYNC_SOURCE", "auto")
    db = sync_history(tmp_path / "db.duckdb", full=True, clock=lambda: later)
    assert db.read_path.startswith("read the Prefect database directly"), db.read_path

    for table in TABLES:
        by_api = _rows(tmp_path / "api.duckdb", table, ids)
        by_db = _rows(tmp_path / "db.duckdb", table, ids)
        assert by_api, f"{table}: the API path stored nothing for the audit jobs"
        assert by_db == by_api, table
    # Every job of the server, not only these: the same set on both paths.
    assert db.jobs_added == api.jobs_added


def test_an_unknown_schema_or_another_server_falls_back_to_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: str
) -> None:
    assert direct.choose(prefect_server).database is not None
    other = direct.choose("http://127.0.0.1:9/api")
    assert other.database is None and "not the managed server" in other.line
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://x@h/db")
    assert "not SQLite" in direct.choose(prefect_server).line
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL")
    monkeypatch.setattr(direct, "KNOWN_SCHEMAS", frozenset({"an-older-one"}))
    result = sync_history(tmp_path / "h.duckdb")
    assert "is not one this version knows" in result.read_path
    assert result.jobs_added > 0  # read through the API instead


def test_sync_says_which_path_it_read(tmp_path: Path) -> None:
    """`wsjobs sync` prints one `Read:` line naming the path (and, for the API, why)."""
    import os
    import subprocess
    import sys

    def sync(source: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-m", "workspaces_jobs.cli", "sync", "--quiet", "--history",
             str(tmp_path / f"{source}.duckdb")],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "WSJOBS_SYNC_SOURCE": source},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if line.startswith("Read: ")]

    [direct_line] = sync("auto")
    assert direct_line.startswith("Read: read the Prefect database directly (")
    assert sync("api") == ["Read: read the Prefect API (WSJOBS_SYNC_SOURCE=api)"]


def test_a_pass_into_an_empty_history_stores_what_an_upsert_stores(
    audit_jobs: dict[str, JobFact], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that starts from an empty history inserts without deleting by key (and
    parses and inserts log lines without looking them up); a pass over a history that
    holds other jobs upserts. Both write the same rows, device counts included."""
    from workspaces_jobs.reporting import rows as R

    ids = sorted(job.id for job in audit_jobs.values())
    later = datetime.now(UTC) + timedelta(minutes=5)
    monkeypatch.setenv("WSJOBS_SYNC_SOURCE", "auto")
    empty = sync_history(tmp_path / "empty.duckdb", full=True, clock=lambda: later)
    held = tmp_path / "held.duckdb"
    with open_store(held) as con:  # another job is there already: no pass from empty
        other = {"id": "other-job", "action": "a", "status": "Completed", "tags": []}
        R.upsert(con.cursor(), "jobs", R.to_arrow("jobs", [other]))
    upserted = sync_history(held, full=True, clock=lambda: later)
    assert upserted.jobs_added == empty.jobs_added > 0
    for table in TABLES:
        by_insert = _rows(tmp_path / "empty.duckdb", table, ids)
        assert by_insert, f"{table}: nothing stored for the audit jobs"
        assert _rows(held, table, ids) == by_insert, table
    with open_store(held, read_only=True) as con:
        counted = con.execute(
            "SELECT count(*) FROM jobs WHERE id IN (SELECT unnest($ids))"
            " AND device_names IS NOT NULL AND devices_ok + devices_failed > 0",
            {"ids": ids},
        ).fetchone()
    assert counted and counted[0] > 0  # the counts come with the jobs rows (R.write_jobs)
