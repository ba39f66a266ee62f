"""The DuckLake history under concurrent use: real processes, real files (issue 17).

Readers and a writer in separate processes, time travel, the migration from an old
``history.duckdb``, ``wsjobs sql``, the file-count bound and kill -9 in the middle of a
commit. The writer here is :mod:`reporting.rows`'s batch upsert in one transaction per
batch, exactly as the sync writes (``sync._Pass._write``), without a Prefect server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from workspaces_jobs.reporting import rows as R
from workspaces_jobs.reporting import store, synthetic
from workspaces_jobs.reporting.migrate import migrate_file
from workspaces_jobs.reporting.store import StoreError, open_store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

#: A writer process: batch n upserts jobs n-0..n-9 (+ their device rows and 20 log lines
#: each) and re-writes job (n-1)-0 as Error, one transaction per batch, like the sync.
WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime, timedelta
    from workspaces_jobs.reporting import rows as R, store, synthetic

    path, first, count, logs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def batch(n):
        jobs = [synthetic.job_row(0, id=f"b{n:05d}-{k}", created=t0) for k in range(10)]
        if n:
            jobs.append(synthetic.job_row(0, id=f"b{n - 1:05d}-0", created=t0, status="Error"))
        for j in jobs:
            j["parameters"] = "{}"
        devices = [dict(job_id=j["id"], device="d1", status=j["status"], steps_ok=1,
                        steps_failed=0, started=None, ended=None) for j in jobs]
        lines = [dict(id=f"b{n:05d}-{k}-{i}", job_id=f"b{n:05d}-{k}", step_id=None, device="d1",
                      step="s", ts=t0 + timedelta(seconds=i), level="INFO", stream="out",
                      message="x" * 200) for k in range(10) for i in range(logs)]
        return jobs, devices, lines

    with store.writer_lock(path, timeout=60), store.open_store(path) as con:
        cur = con.cursor()
        for n in range(first, first + count):
            jobs, devices, lines = batch(n)
            cur.execute("BEGIN TRANSACTION")
            R.upsert(cur, "jobs", R.to_arrow("jobs", jobs))
            R.upsert(cur, "job_devices", R.to_arrow("job_devices", devices))
            R.insert_new(cur, "logs", R.to_arrow("logs", lines))
            print("commit", n, flush=True)
            cur.execute("COMMIT")
            print("done", n, flush=True)
    """
)

#: A reader process: loops for argv[2] seconds checking that every snapshot it sees is
#: whole (10 jobs per batch, no duplicate ids, logs of every job) and never goes back.
READER = textwrap.dedent(
    """
    import json, sys, time
    from workspaces_jobs.reporting.store import open_store

    path, seconds, hold = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "hold"
    errors, lat, last = [], [], 0
    end = time.monotonic() + seconds
    SQL = ("SELECT (SELECT count(*) FROM jobs), (SELECT count(DISTINCT id) FROM jobs),"
           " (SELECT count(*) FROM logs), (SELECT count(*) FROM job_devices)")
    while time.monotonic() < end:
        start = time.monotonic()
        try:
            with open_store(path, read_only=True, timeout=0) as con:
                cur = con.cursor()
                if hold:  # one read transaction for the whole time: one snapshot
                    cur.execute("BEGIN TRANSACTION")
                    first = cur.execute(SQL).fetchone()
                    while time.monotonic() < end:
                        time.sleep(0.5)
                        again = cur.execute(SQL).fetchone()
                        if again != first:
                            errors.append(f"snapshot moved: {first} -> {again}")
                    cur.execute("COMMIT")
                    jobs = first[0]
                else:
                    jobs, distinct, logs, devices = cur.execute(SQL).fetchone()
                    if jobs != distinct or jobs % 10 or devices != jobs or logs != jobs * 20:
                        errors.append(f"partial snapshot: {jobs} {distinct} {logs} {devices}")
                    if jobs < last:
                        errors.append(f"went back: {last} -> {jobs}")
                    last = jobs
        except Exception as exc:
            errors.append(repr(exc)[:300])
        lat.append(time.monotonic() - start)
    lat.sort()
    print(json.dumps({"errors": errors, "reads": len(lat), "last": last,
                      "p95": lat[int(len(lat) * 0.95)] if lat else None}))
    """
)


def start(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def write(path: Path, first: int, count: int, logs: int) -> None:
    """Run the writer process to the end."""
    subprocess.run(
        [sys.executable, "-c", WRITER, *map(str, (path, first, count, logs))], check=True
    )


def scalar(path: Path, sql: str) -> object:
    with open_store(path, read_only=True) as con:
        row = con.cursor().execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_readers_and_a_writer_in_separate_processes_never_fail_or_wait(tmp_path: Path) -> None:
    path = tmp_path / "h.ducklake"
    with open_store(path):
        pass
    writer = start(WRITER, path, 0, 40, 20)
    readers = [start(READER, path, 20, "loop") for _ in range(2)]
    holder = start(READER, path, 20, "hold")
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    results = []
    for proc in [*readers, holder]:
        out_r, err_r = proc.communicate(timeout=300)
        assert proc.returncode == 0, err_r
        results.append(json.loads(out_r))
    for result in results:
        assert result["errors"] == [], result["errors"][:3]
    assert all(r["reads"] >= 1 for r in results)
    assert scalar(path, "SELECT count(*) FROM jobs") == 400
    assert scalar(path, "SELECT count(*) FILTER (status = 'Error') FROM jobs") == 39


def test_time_travel_shows_the_past_and_which_commit_changed_a_row(tmp_path: Path) -> None:
    path = tmp_path / "h.ducklake"
    write(path, 0, 1, 1)
    with open_store(path, read_only=True) as con:
        (before,) = (
            con.cursor()
            .execute(f"SELECT max(snapshot_id) FROM ducklake_snapshots('{store.lake_name(con)}')")
            .fetchone()
        )
    time.sleep(1.1)  # snapshot times are compared below
    write(path, 1, 1, 1)
    with open_store(path, read_only=True) as con:
        cur = con.cursor()
        lake = store.lake_name(con)
        (now_id,) = cur.execute(
            f"SELECT max(snapshot_id) FROM ducklake_snapshots('{lake}')"
        ).fetchone()
        assert now_id > before
        assert cur.execute("SELECT status FROM jobs WHERE id = 'b00000-0'").fetchone() == ("Error",)
        old = cur.execute(
            f"SELECT status, (SELECT count(*) FROM jobs AT (VERSION => {before}))"
            f" FROM jobs AT (VERSION => {before}) WHERE id = 'b00000-0'"
        ).fetchone()
        assert old == ("Completed", 10)
        (taken,) = cur.execute(
            f"SELECT snapshot_time FROM ducklake_snapshots('{lake}') WHERE snapshot_id = $v",
            {"v": before},
        ).fetchone()
        at_time = cur.execute(
            "SELECT count(*) FROM jobs AT (TIMESTAMP => $t)", {"t": taken}
        ).fetchone()
        assert at_time == (10,)
        changes = cur.execute(
            "SELECT snapshot_id, change_type, status FROM ducklake_table_changes("
            f"'{lake}', 'main', 'jobs', {before + 1}, {now_id}) WHERE id = 'b00000-0'"
            " ORDER BY change_type"
        ).fetchall()
        assert {c[1] for c in changes} >= {"update_postimage"} or {c[1] for c in changes} >= {
            "delete",
            "insert",
        }
        assert all(before < c[0] <= now_id for c in changes)


def _old_history_file(path: Path, jobs: int) -> None:
    """A history of the one-DuckDB-file era: the same tables, with their primary keys."""
    con = duckdb.connect(str(path))
    try:
        for mig in store.migrations():
            con.execute(mig.sql)
        con.execute(
            "CREATE TABLE schema_version (version INTEGER, name VARCHAR, applied TIMESTAMPTZ)"
        )
        con.execute("INSERT INTO schema_version VALUES (1, 'history', now()), (2, 'saved', now())")
        rows = [synthetic.job_row(i, id=f"old-{i}", created=T0) for i in range(jobs)]
        for r in rows:
            r["parameters"] = "{}"
        synthetic.insert_arrow(con, "jobs", R.to_arrow("jobs", rows))
        con.execute(
            "INSERT INTO logs SELECT 'l' || i, 'old-' || (i % $n), NULL, NULL, NULL,"
            " TIMESTAMPTZ '2026-03-02 09:00:00+00', 'INFO', NULL, 'line ' || i"
            " FROM range(500) t(i)",
            {"n": jobs},
        )
        con.execute(
            "INSERT INTO saved_filters (name, spec, description, created, updated)"
            " VALUES ('mine', '{}', 'd', now(), now())"
        )
    finally:
        con.close()


def test_migrate_copies_verifies_keeps_the_old_file_and_is_idempotent(tmp_path: Path) -> None:
    old = tmp_path / "history.duckdb"
    _old_history_file(old, 50)
    before = old.read_bytes()
    new = tmp_path / "history.ducklake"
    result = migrate_file(old, new)
    assert result.tables["jobs"] == (50, 50, 50)
    assert result.tables["logs"] == (500, 500, 500)
    assert result.tables["saved_filters"] == (1, 1, 1)
    assert old.read_bytes() == before  # the old file is kept as it was
    again = migrate_file(old, new)
    assert again.added == 0 and again.tables["jobs"] == (50, 0, 50)
    assert scalar(new, "SELECT count(*) FROM jobs") == 50
    assert scalar(new, "SELECT count(*) FROM logs") == 500
    # The CLI: same command, JSON counts, and a refusal in one line for a bad source.
    env = {**os.environ, "WSJOBS_HISTORY": str(new)}
    cli = [sys.executable, "-m", "workspaces_jobs.cli", "history", "migrate"]
    done = subprocess.run([*cli, "--from", str(old), "--json"], capture_output=True, text=True,
                          env=env, check=True)  # fmt: skip
    assert json.loads(done.stdout)["tables"]["jobs"] == {"old": 50, "added": 0, "verified": 50}
    bad = subprocess.run([*cli, "--from", str(tmp_path / "nope.duckdb")], capture_output=True,
                         text=True, env=env)  # fmt: skip
    assert bad.returncode == 4
    assert bad.stderr.strip().startswith("error: no old history file at")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_migrate_refuses_to_migrate_a_file_into_itself(tmp_path: Path) -> None:
    old = tmp_path / "history.duckdb"
    _old_history_file(old, 1)
    with pytest.raises(StoreError, match="is the old file itself"):
        migrate_file(old, old)


def test_wsjobs_sql_runs_read_only_queries_in_the_duckdb_cli(tmp_path: Path) -> None:
    path = tmp_path / "h.ducklake"
    write(path, 0, 2, 1)
    env = {**os.environ, "WSJOBS_HISTORY": str(path)}
    sql = [sys.executable, "-m", "workspaces_jobs.cli", "sql", "--csv", "-c"]
    out = subprocess.run([*sql, "SELECT count(*) AS n FROM jobs"], capture_output=True,
                         text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n", "20"]
    refused = subprocess.run([*sql, "DELETE FROM jobs"], capture_output=True, text=True, env=env,
                           timeout=120)  # fmt: skip
    assert refused.returncode != 0 and "read-only" in (refused.stdout + refused.stderr).lower()
    assert scalar(path, "SELECT count(*) FROM jobs") == 20


@pytest.mark.slow
def test_file_count_stays_bounded_under_many_small_syncs(tmp_path: Path) -> None:
    """10,000 jobs landed by 1,000 small commits (10 jobs each, one earlier job updated),
    maintenance every 100 commits as the sync runs it: the data files stay bounded."""
    path = tmp_path / "h.ducklake"
    with open_store(path) as con:
        cur = con.cursor()
        cur.execute("SET threads = 1")
        most = 0
        for n in range(1000):
            jobs = [_job(f"f{n:04d}-{k}") for k in range(10)]
            if n:
                jobs.append(_job(f"f{n - 1:04d}-0", status="Error"))
            cur.execute("BEGIN TRANSACTION")
            R.upsert(cur, "jobs", R.to_arrow("jobs", jobs))
            cur.execute("COMMIT")
            if n % 100 == 99:
                store.maintain(con, now=datetime.now(UTC) + timedelta(days=30), keep_days=7)
                most = max(most, store.data_files(con))
        files = store.data_files(con)
        assert cur.execute("SELECT count(*), count(DISTINCT id) FROM jobs").fetchone() == (
            10_000,
            10_000,
        )
        assert cur.execute("SELECT count(*) FROM jobs WHERE status = 'Error'").fetchone() == (999,)
    on_disk = [p for p in (tmp_path / "h.ducklake.files").rglob("*") if p.is_file()]
    assert files <= FILE_BOUND and most <= FILE_BOUND, (files, most)
    assert len(on_disk) <= FILE_BOUND, len(on_disk)


#: The bound docs/history.md states for the history's data files after maintenance.
FILE_BOUND = 6


def _job(job_id: str, **values: object) -> dict[str, object]:
    row = synthetic.job_row(0, id=job_id, created=T0, **values)
    row["parameters"] = "{}"
    return row


@pytest.mark.slow
def test_kill_9_mid_commit_leaves_no_partial_rows_and_the_next_sync_completes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.ducklake"
    with open_store(path):
        pass
    next_batch = 0
    for _attempt in range(3):
        writer = start(WRITER, path, next_batch, 1000, 2000)  # big batches: long commits
        assert writer.stdout is not None
        line = writer.stdout.readline()
        while line and not line.startswith("commit"):
            line = writer.stdout.readline()
        time.sleep(0.05)  # inside COMMIT (writing Parquet files and the catalog)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        jobs = int(scalar(path, "SELECT count(*) FROM jobs"))  # type: ignore[call-overload]
        assert jobs % 10 == 0
        assert scalar(path, "SELECT count(*) FROM logs") == jobs * 2000
        assert scalar(path, "SELECT count(*) FROM job_devices") == jobs
        next_batch = jobs // 10
    # The lock died with the process; the next writer finishes its work.
    done = subprocess.run(
        [sys.executable, "-c", WRITER, *map(str, (path, next_batch, 2, 10))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert scalar(path, "SELECT count(*) FROM jobs") == (next_batch + 2) * 10
