"""A team history: the DuckLake catalog in a real PostgreSQL (Debian's package), started
here on a free loopback port, its data in a shared folder; read from another process as
another host would (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import postgres_server

from workspaces_jobs.reporting import rows as R
from workspaces_jobs.reporting import synthetic
from workspaces_jobs.reporting.store import locate, open_store, writer_lock


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server (tests/pgserver.py); yields a libpq connection string
    to its database ``history``."""
    with postgres_server("history") as server:
        yield server.dsn


READ_ELSEWHERE = textwrap.dedent(
    """
    from workspaces_jobs.reporting.store import open_store
    with open_store(read_only=True) as con:
        print(con.cursor().execute(
            "SELECT count(*), count(*) FILTER (status = 'Error') FROM jobs").fetchone())
    """
)


def test_postgres_catalog_serves_writer_and_readers_of_other_processes(
    postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared-data"
    monkeypatch.setenv("WSJOBS_HISTORY_CATALOG", f"postgres:{postgres} password=s3cret")
    monkeypatch.setenv("WSJOBS_HISTORY_DATA", str(shared))
    monkeypatch.setenv("WSJOBS_HOME", str(tmp_path / "home"))
    loc = locate()
    assert loc.kind == "postgres" and "s3cret" not in loc.display  # never in messages
    with writer_lock(), open_store() as con:
        cur = con.cursor()
        for n in range(3):  # three sync-like commits; the last one is big: Parquet files
            jobs = [_job(f"pg{n}-{k}") for k in range(10 if n < 2 else 2000)]
            if n:
                jobs.append(_job(f"pg{n - 1}-0", status="Error"))
            cur.execute("BEGIN TRANSACTION")
            R.upsert(cur, "jobs", R.to_arrow("jobs", jobs))
            cur.execute("COMMIT")
    assert any(shared.rglob("*.parquet"))  # data files on the shared path
    env = {**os.environ}
    other = subprocess.run(
        [sys.executable, "-c", READ_ELSEWHERE], capture_output=True, text=True, env=env, timeout=300
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "(2020, 2)"
    # A second process opening read-write (a second host's web view) sees the same rows.
    with open_store() as con:
        assert con.cursor().execute("SELECT count(DISTINCT id) FROM jobs").fetchone() == (2020,)


HOLD_ON_ANOTHER_HOST = textwrap.dedent(
    """
    import sys, time
    from workspaces_jobs.reporting.store import writer_lock
    with writer_lock(timeout=60):
        print("held", flush=True)
        time.sleep(float(sys.argv[1]))
    """
)


def test_two_hosts_syncs_take_turns_on_a_postgres_catalog(
    postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file lock orders one host's syncs; a PostgreSQL catalog's syncs on two hosts
    (two homes, so two lock files) take turns through the catalog's advisory lock."""
    from workspaces_jobs.reporting.store import StoreLocked

    monkeypatch.setenv("WSJOBS_HISTORY_CATALOG", f"postgres:{postgres}")
    monkeypatch.setenv("WSJOBS_HISTORY_DATA", str(tmp_path / "shared-data"))
    env = {**os.environ, "WSJOBS_HOME": str(tmp_path / "host-a")}
    monkeypatch.setenv("WSJOBS_HOME", str(tmp_path / "host-b"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_ON_ANOTHER_HOST, "6"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLocked, match=rf"wsjobs sync on .* \(PID {holder.pid}\)"):
            with writer_lock(timeout=0.5):
                pass
        told: list[str] = []
        with writer_lock(timeout=120, on_wait=told.append):
            assert holder.poll() is not None or holder.wait(timeout=60) == 0  # it let go
        assert len(told) == 1 and f"PID {holder.pid}" in told[0]
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_postgres_catalog_needs_a_data_folder(
    postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workspaces_jobs.reporting.store import StoreError

    monkeypatch.setenv("WSJOBS_HISTORY_CATALOG", f"postgres:{postgres}")
    monkeypatch.delenv("WSJOBS_HISTORY_DATA", raising=False)
    with pytest.raises(StoreError, match="set WSJOBS_HISTORY_DATA"):
        locate()


def _job(job_id: str, **values: object) -> dict[str, object]:
    row = synthetic.job_row(0, id=job_id, **values)
    row["parameters"] = "{}"
    return row
