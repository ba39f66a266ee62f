"""Retention, two stores: the history's own (``wsjobs prune``) and Prefect's (``db_vacuum``
on the managed server, or a run deleted through the API), with the history keeping its
copies and closing jobs that vanished before a final status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from workspaces_jobs import server
from workspaces_jobs.errors import BadInput
from workspaces_jobs.jobs import submit_job, wait_job
from workspaces_jobs.notify import subscribe
from workspaces_jobs.notify.cleanup import job_of
from workspaces_jobs.reporting import synthetic
from workspaces_jobs.reporting.prune import parse_age
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.sync import sync_history
from workspaces_jobs.tasks.transports.local import reap_job

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server

NOW = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)  # a month change, pinned
OLD = NOW - timedelta(days=3 * 365)


def wsjobs(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def counts(path: Path, ids: list[str]) -> dict[str, int]:
    with open_store(path, read_only=True) as con:
        out = {}
        for table, key in (("jobs", "id"), ("steps", "job_id"), ("job_devices", "job_id")):
            row = con.execute(
                f"SELECT count(*) FROM {table} WHERE {key} IN (SELECT unnest($ids))", {"ids": ids}
            ).fetchone()
            out[table] = int(row[0]) if row else 0
        row = con.execute(
            "SELECT count(*) FROM logs WHERE job_id IN (SELECT unnest($ids))", {"ids": ids}
        ).fetchone()
        out["logs"] = int(row[0]) if row else 0
    return out


def test_prune_removes_old_final_jobs_with_their_rows_and_never_unfinished_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.duckdb"

    def job(status: str, created: datetime) -> dict[str, Any]:
        return {
            "status": status,
            "created": created,
            "devices": [{"device": "t1", "steps": [{"step": "s"}]}],
            "logs": ["a line", "another"],
        }

    with open_store(path) as con:
        old_final = synthetic.add_jobs(
            con,
            [
                job(status, OLD)
                for status in (
                    "Completed",
                    "Completed with errors",
                    "Error",
                    "Canceled by the user",
                )
            ],
        )
        old_open = synthetic.add_jobs(con, [job("Pending", OLD), job("In progress", OLD)])
        recent = synthetic.add_jobs(con, [job("Completed", NOW - timedelta(days=30))])
    before = counts(path, old_final)
    assert before == {"jobs": 4, "steps": 4, "job_devices": 4, "logs": 8}

    dry = wsjobs(
        "prune", "--older-than", "2y", "--dry-run", "--history", str(path), "--history-only",
        "--json", WSJOBS_NOW=NOW.isoformat(),
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["jobs"] == 4 and plan["dry_run"] is True
    assert plan["rows"]["steps"] == 4 and plan["rows"]["logs"] == 8
    assert plan["rows"]["job_devices"] == 4
    assert counts(path, old_final) == before  # a dry run changes nothing

    done = wsjobs(
        "prune", "--older-than", "2y", "--history", str(path), "--history-only",
        WSJOBS_NOW=NOW.isoformat(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "removed 4 job(s) that ended before 2024-12-01" in done.stdout, done.stdout
    assert counts(path, old_final) == {"jobs": 0, "steps": 0, "job_devices": 0, "logs": 0}
    assert counts(path, old_open)["jobs"] == 2  # Pending / In progress: never pruned
    assert counts(path, old_open)["logs"] == 4
    assert counts(path, recent) == {"jobs": 1, "steps": 1, "job_devices": 1, "logs": 2}


@pytest.mark.parametrize(
    ("text", "days"), [("90d", 90), ("12w", 84), ("18mo", 540), ("2y", 730), (" 1D ", 1)]
)
def test_parse_age(text: str, days: int) -> None:
    assert parse_age(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["", "2", "2 years", "-1y", "0d", "999999y", "1h", "1e9d"])
def test_bad_age_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="bad age"):
        parse_age(text)


def test_prune_errors_are_one_line(tmp_path: Path) -> None:
    out = wsjobs("prune", "--older-than", "2 years", "--history", str(tmp_path / "h.duckdb"))
    assert out.returncode == 4 and out.stderr.strip().startswith("error: bad age"), out.stderr
    missing = tmp_path / "none" / "h.duckdb"
    out = wsjobs("prune", "--older-than", "2y", "--history", str(missing), "--history-only")
    assert out.returncode != 0 and "no history file" in out.stderr
    assert not missing.parent.exists()  # a prune of nothing creates nothing


def test_managed_server_enables_flow_run_vacuum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD", raising=False)
    env = server.server_env(4200)
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] == "events,flow_runs"
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"] == str(90 * 86400)
    monkeypatch.setenv("WSJOBS_PREFECT_RETENTION_DAYS", "0")
    env = server.server_env(4200)
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] == "events"
    assert "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD" not in env
    monkeypatch.setenv("WSJOBS_PREFECT_RETENTION_DAYS", "7")
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD", "7200")
    env = server.server_env(4200)  # what the user set for Prefect wins
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"] == "7200"
    # Prefect itself accepts what we pass (its own settings model validates it).
    from prefect.settings.models.server.services import ServerServicesDBVacuumSettings

    monkeypatch.delenv("PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD")
    monkeypatch.setenv("WSJOBS_PREFECT_RETENTION_DAYS", "90")
    for key, value in server.vacuum_env({}).items():
        monkeypatch.setenv(key, value)
    parsed = ServerServicesDBVacuumSettings()
    assert parsed.retention_period == timedelta(days=90)
    assert "flow_runs" in str(parsed.enabled)


def test_jobs_deleted_in_prefect_keep_or_get_a_final_status_in_history(tmp_path: Path) -> None:
    history = tmp_path / "history.duckdb"
    done = submit_job("ok", target=["t1"], info="retention finished")
    wait_job(done, timeout=90)
    running = submit_job("slow", target=["t1"], params={"seconds": "300"}, info="ret running")
    try:
        _deleted_jobs_case(tmp_path, history, done, running)
    finally:  # the deleted job's step is still sleeping: end it
        reap_job(running)


def _deleted_jobs_case(tmp_path: Path, history: Path, done: str, running: str) -> None:
    pending = submit_job("ok", target=["t2"], start=False, info="retention pending")
    from workspaces_jobs.jobs import job_state

    deadline = time.monotonic() + 60
    while job_state(running)[0].value != "In progress":
        assert time.monotonic() < deadline, "the slow job never started"
        time.sleep(0.3)
    subscribe(pending, ["ghost@example.com"])  # a notification record in Prefect
    sync_history(history)
    with open_store(history, read_only=True) as con:
        before = dict(
            con.execute(
                "SELECT id, status FROM jobs WHERE id IN (SELECT unnest($ids))",
                {"ids": [done, running, pending]},
            ).fetchall()
        )
    assert before == {done: "Completed", running: "In progress", pending: "Pending"}
    kept = counts(history, [done])

    with get_client(sync_client=True) as client:  # what db_vacuum or a redeploy does
        for job_id in (done, running, pending):
            client.delete_flow_run(UUID(job_id))
    sync_history(history)

    with open_store(history, read_only=True) as con:
        rows = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT id, status, reason, canceled_by, state_message, ended FROM jobs"
                " WHERE id IN (SELECT unnest($ids))",
                {"ids": [done, running, pending]},
            ).fetchall()
        }
        devices = con.execute(
            "SELECT status FROM job_devices WHERE job_id = $id", {"id": pending}
        ).fetchall()
    assert rows[done][:2] == ("Completed", None)  # the history's copy is intact
    assert counts(history, [done]) == kept
    assert rows[running][:2] == ("Error", "deleted")
    assert "deleted from Prefect while In progress" in rows[running][3]
    assert rows[running][4] is not None
    assert rows[pending][:3] == ("Canceled by the user", None, "Prefect: deleted")
    assert "deleted from Prefect while Pending" in rows[pending][3]
    assert devices == [("Canceled by the user",)]
    listed = wsjobs(
        "list", "--no-sync", "--history", str(history), "--age", "all", "--json",
        "--search", "ret", "--limit", "0",
    )  # fmt: skip
    statuses = {j["id"]: j["status"] for j in json.loads(listed.stdout)}
    assert statuses.get(running) == "Error" and statuses.get(pending) == "Canceled by the user"

    # The notifier's record of the deleted job goes with it.
    with get_client(sync_client=True) as client:
        names = [v.name for v in client.read_variables(limit=200)]
    assert any(job_of(n) == pending for n in names)
    pruned = wsjobs("prune", "--older-than", "3650d", "--history", str(history), "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert f"wsjobs-notify-{pending}" in json.loads(pruned.stdout)["variables"]
    with get_client(sync_client=True) as client:
        names = [v.name for v in client.read_variables(limit=200)]
    assert not any(job_of(n) == pending for n in names)


@pytest.mark.parametrize(
    ("name", "job"),
    [
        (
            "wsjobs-notify-0b4d5e2a-1c3f-4a5b-8c7d-9e0f1a2b3c4d",
            "0b4d5e2a-1c3f-4a5b-8c7d-9e0f1a2b3c4d",
        ),
        (
            "wsjobs-notifylock-0b4d5e2a-1c3f-4a5b-8c7d-9e0f1a2b3c4d",
            "0b4d5e2a-1c3f-4a5b-8c7d-9e0f1a2b3c4d",
        ),
        (
            "wsjobs-mailclaim-0b4d5e2a-1c3f-4a5b-8c7d-9e0f1a2b3c4d-ab12cd-3",
            "0b4d5e2a-1c3f-4a5b-8c7d-9e0f1a2b3c4d",
        ),
        ("wsjobs-notify-not-a-uuid", None),
        ("someone-elses-variable", None),
    ],
)
def test_notifier_variable_names(name: str, job: str | None) -> None:
    assert job_of(name) == job


VACUUM = """
import asyncio
from prefect.server.database import provide_database_interface
from prefect.server.services.db_vacuum import vacuum_old_flow_runs

asyncio.run(vacuum_old_flow_runs(db=provide_database_interface()))
"""


def test_prefect_db_vacuum_of_old_runs_leaves_the_history_copies(tmp_path: Path) -> None:
    """Prefect's own vacuum, with the settings the managed server gets, on the managed
    server's database: the job's end is moved 3 hours back in that database (the one
    thing faked: its age; Prefect's minimum retention is one hour)."""
    import sqlite3

    history = tmp_path / "history.duckdb"
    old = submit_job("ok", target=["t1", "t2"], info="vacuumed job")
    fresh = submit_job("ok", target=["t1"], info="fresh job")
    for job_id in (old, fresh):
        wait_job(job_id, timeout=90)
    sync_history(history)
    kept = counts(history, [old])
    assert kept["jobs"] == 1 and kept["job_devices"] == 2

    database = server.server_home() / "prefect.db"
    with sqlite3.connect(database, timeout=30) as db:
        (ended,) = db.execute("SELECT end_time FROM flow_run WHERE id = ?", (old,)).fetchone()
        earlier = datetime.fromisoformat(ended) - timedelta(hours=3)
        db.execute(
            "UPDATE flow_run SET end_time = ? WHERE id = ?",
            (earlier.strftime("%Y-%m-%d %H:%M:%S.%f"), old),
        )
    env = {
        **os.environ,
        "PREFECT_HOME": str(server.server_home()),
        **server.vacuum_env({}),
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": "3601",
    }
    env.pop("PREFECT_API_URL", None)
    vacuum = subprocess.run(
        [sys.executable, "-c", VACUUM], capture_output=True, text=True, timeout=180, env=env
    )
    assert vacuum.returncode == 0, vacuum.stderr[-2000:]

    with get_client(sync_client=True) as client:
        alive = {
            str(r.id)
            for r in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(old), UUID(fresh)]))
            )
        }
    assert alive == {fresh}  # Prefect dropped the old run, kept the fresh one
    sync_history(history)
    sync_history(history, full=True)
    assert counts(history, [old]) == kept  # the history's copy is intact
    with open_store(history, read_only=True) as con:
        row = con.execute("SELECT status FROM jobs WHERE id = $id", {"id": old}).fetchone()
    assert row == ("Completed",)
