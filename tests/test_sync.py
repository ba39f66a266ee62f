"""The history sync against the real Prefect API and real DuckDB files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from historyhelpers import audit_jobs_fixture  # noqa: F401  (the session fixture audit_jobs)
from jobhelpers import read_logs_settled

from workspaces_jobs.jobfacts import JobFact
from workspaces_jobs.jobs import job_state, submit_job, wait_job
from workspaces_jobs.reporting import sync as sync_module
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.sync import SyncProgress, SyncResult, sync_history
from workspaces_jobs.status import JobStatus

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server


def rows(path: Path, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    with open_store(path, read_only=True) as con:
        return con.cursor().execute(sql, params or {}).fetchall()


def table_snapshot(path: Path, ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of these jobs in every table, to compare two syncs."""
    snap = {}
    with open_store(path, read_only=True) as con:
        for table, key in (
            ("jobs", "id"),
            ("steps", "job_id"),
            ("job_devices", "job_id"),
            ("logs", "job_id"),
            ("job_states", "job_id"),
        ):
            snap[table] = (
                con.cursor()
                .execute(
                    f"SELECT * FROM {table} WHERE {key} IN (SELECT unnest($ids)) ORDER BY ALL",
                    {"ids": ids},
                )
                .fetchall()
            )
    return snap


def assert_matches_api(path: Path, job: JobFact) -> None:
    """The history says what ``wsjobs show`` (the live API) says about the job."""
    got = rows(
        path,
        "SELECT status, reason, action, owner, info, canceled_by FROM jobs WHERE id = $id",
        {"id": job.id},
    )
    assert got == [(job.status, job.reason, job.action, job.owner, job.info, job.canceled_by)]
    devices = rows(
        path, "SELECT device, status FROM job_devices WHERE job_id = $id ORDER BY 1", {"id": job.id}
    )
    assert devices == sorted((d.device, d.status) for d in job.devices)
    steps = rows(
        path,
        "SELECT id, device, step, status, exit_code FROM steps WHERE job_id = $id ORDER BY 1",
        {"id": job.id},
    )
    assert steps == sorted((s.id, s.device, s.step, s.status, s.exit_code) for s in job.steps)
    logs = rows(path, "SELECT count(*) FROM logs WHERE job_id = $id", {"id": job.id})
    assert logs == [(len(job.logs),)]


@pytest.fixture(scope="module")
def first_sync(
    tmp_path_factory: pytest.TempPathFactory, audit_jobs: dict[str, JobFact]
) -> tuple[Path, SyncResult]:
    path = tmp_path_factory.mktemp("history") / "history.duckdb"
    seen: list[SyncProgress] = []
    result = sync_history(path, progress=seen.append)
    assert seen and seen[-1].done == seen[-1].total
    return path, result


def test_first_sync_matches_api_for_each_final_status(
    first_sync: tuple[Path, SyncResult], audit_jobs: dict[str, JobFact]
) -> None:
    path, result = first_sync
    statuses = {key: job.status for key, job in audit_jobs.items()}
    assert statuses == {
        "ok": JobStatus.COMPLETED.value,
        "mixed": JobStatus.COMPLETED_WITH_ERRORS.value,
        "broken": JobStatus.ERROR.value,
        "canceled": JobStatus.CANCELED.value,
    }
    assert {j.id for j in audit_jobs.values()} <= set(result.added_ids)
    for job in audit_jobs.values():
        assert_matches_api(path, job)
    assert rows(
        path, "SELECT canceled_by FROM jobs WHERE id = $id", {"id": audit_jobs["canceled"].id}
    ) == [("carol",)]
    # the state history of a finished job, each state mapped to a status
    states = rows(
        path,
        "SELECT state_type, status FROM job_states WHERE job_id = $id ORDER BY ts",
        {"id": audit_jobs["ok"].id},
    )
    assert states[0] == ("SCHEDULED", "Pending") and states[-1] == ("COMPLETED", "Completed")
    assert ("RUNNING", "In progress") in states
    watermark = rows(path, "SELECT watermark FROM sync_state")
    assert watermark and watermark[0][0] is not None


def test_only_workspaces_jobs_are_synced(
    first_sync: tuple[Path, SyncResult], tmp_path: Path
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed

    @flow(name="not-a-job")
    def not_a_job() -> None:
        pass

    with get_client(sync_client=True) as client:
        other = client.create_flow_run(not_a_job, tags=["something-else"], state=Completed())
    path = tmp_path / "h.duckdb"
    result = sync_history(path)
    assert str(other.id) not in result.added_ids
    assert rows(path, "SELECT count(*) FROM jobs WHERE id = $id", {"id": str(other.id)}) == [(0,)]
    tags = rows(path, "SELECT count(*) FROM jobs WHERE NOT list_contains(tags, 'workspaces')")
    assert tags == [(0,)]


def test_sync_again_changes_nothing(
    first_sync: tuple[Path, SyncResult], audit_jobs: dict[str, JobFact]
) -> None:
    path, _ = first_sync
    ids = [j.id for j in audit_jobs.values()]
    before = table_snapshot(path, ids)
    again = sync_history(path)
    assert not set(ids) & set(again.added_ids + again.updated_ids)
    assert table_snapshot(path, ids) == before


def test_incremental_sync_adds_exactly_the_new_job(first_sync: tuple[Path, SyncResult]) -> None:
    path, _ = first_sync
    sync_history(path)  # whatever other tests left behind is in now
    before = rows(path, "SELECT count(*) FROM jobs")[0][0]
    job_id = submit_job("ok", target=["t2"], owner="dave", info="incremental")
    wait_job(job_id, timeout=60)
    job = read_logs_settled(job_id)
    result = sync_history(path)
    # Scoped to this test's job: other tests' jobs on the shared server may end or appear
    # meanwhile; this one is added once and every added job is one new row.
    assert result.added_ids.count(job_id) == 1
    assert rows(path, "SELECT count(*) FROM jobs")[0][0] == before + len(set(result.added_ids))
    assert_matches_api(path, job)


def test_interrupted_sync_resumes_without_gaps_or_duplicates(
    audit_jobs: dict[str, JobFact], tmp_path: Path
) -> None:
    path = tmp_path / "h.duckdb"

    class Boom(RuntimeError):
        pass

    def fail_after_first_batch(p: SyncProgress) -> None:
        if p.done > 0:
            raise Boom("injected after the first batch")

    with pytest.raises(Boom):
        sync_history(path, progress=fail_after_first_batch, batch_size=2)
    partial = rows(path, "SELECT count(*) FROM jobs")[0][0]
    assert 1 <= partial <= 2  # the first batch committed, nothing after it
    assert rows(path, "SELECT count(*) FROM sync_state") == [(0,)]  # watermark not moved

    result = sync_history(path, batch_size=2)
    assert result.previous_watermark is None
    total = rows(path, "SELECT count(*), count(DISTINCT id) FROM jobs")[0]
    assert total[0] == total[1] >= partial + 2
    assert len(set(result.added_ids)) == total[0] - partial
    for job in audit_jobs.values():  # nothing missing, nothing twice
        assert_matches_api(path, job)
    dupes = rows(path, "SELECT count(*) - count(DISTINCT id) FROM logs")
    assert dupes == [(0,)]


@pytest.mark.slow
def test_job_in_progress_at_first_sync_is_updated_later(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    job_id = submit_job("slow", target=["t1"], params={"seconds": "45"}, info="slow one")
    deadline = time.monotonic() + 60
    while job_state(job_id)[0] != JobStatus.IN_PROGRESS:
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.2)
    sync_history(path)
    assert rows(path, "SELECT status, ended FROM jobs WHERE id = $id", {"id": job_id}) == [
        ("In progress", None)
    ]
    wait_job(job_id, timeout=120)
    job = read_logs_settled(job_id)
    result = sync_history(path)
    assert job_id in result.updated_ids
    assert_matches_api(path, job)
    woke = rows(
        path, "SELECT count(*) FROM logs WHERE job_id = $id AND message = 'woke'", {"id": job_id}
    )
    assert woke == [(1,)]


@pytest.mark.slow
def test_late_completion_after_inactivity_keeps_the_episode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Running → forced Failed(Inactivity) → the live process completes: the history
    first shows Error (inactivity), then Completed, and keeps the Inactivity state."""
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    # no settle window, no overlap: only the late window can bring the job back
    monkeypatch.setattr(sync_module, "SETTLE", timedelta(0))
    monkeypatch.setattr(sync_module, "OVERLAP", timedelta(0))
    path = tmp_path / "h.duckdb"
    job_id = submit_job("slow", target=["t1"], params={"seconds": "30"}, info="late")
    deadline = time.monotonic() + 60
    while job_state(job_id)[0] != JobStatus.IN_PROGRESS:
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.2)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            UUID(job_id), Failed(name="Inactivity", message="no output"), force=True
        )
    sync_history(path)
    assert rows(path, "SELECT status, reason FROM jobs WHERE id = $id", {"id": job_id}) == [
        ("Error", "inactivity")
    ]
    deadline = time.monotonic() + 120
    while job_state(job_id)[0] != JobStatus.COMPLETED:
        assert time.monotonic() < deadline, "the late completion never came"
        time.sleep(0.3)
    result = sync_history(path)
    assert job_id in result.updated_ids
    assert rows(
        path, "SELECT status, had_inactivity FROM v_jobs WHERE id = $id", {"id": job_id}
    ) == [("Completed", True)]
    names = [
        r[0]
        for r in rows(
            path, "SELECT state_name FROM job_states WHERE job_id = $id ORDER BY ts", {"id": job_id}
        )
    ]
    assert names.index("Inactivity") < names.index("Completed")


def test_notifications_are_synced_from_variables(
    audit_jobs: dict[str, JobFact], tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    job_id = audit_jobs["broken"].id
    name = f"wsjobs-notify-{job_id}"
    value = {
        "job_id": job_id,
        "subscribers": [
            {
                "email": "ops@example.com",
                "status": "sent",
                "attempts": 1,
                "last_error": None,
                "sent_at": "2026-01-02T03:04:05+00:00",
                "subscribed_at": "2026-01-02T03:00:00+00:00",
                "subscribed_by": "alice",
            },
            {
                "email": "lead@example.com",
                "status": "pending",
                "attempts": 0,
                "last_error": None,
                "sent_at": None,
                "subscribed_at": "2026-01-02T03:01:00+00:00",
                "subscribed_by": "bob",
            },
        ],
    }
    path = tmp_path / "h.duckdb"
    with get_client(sync_client=True) as client:
        client.create_variable(VariableCreate(name=name, value=value))
        try:
            sync_history(path)
            got = rows(
                path,
                "SELECT email, status, attempts, subscribed_by, sent_at IS NOT NULL"
                " FROM notifications WHERE job_id = $id ORDER BY email",
                {"id": job_id},
            )
            assert got == [
                ("lead@example.com", "pending", 0, "bob", False),
                ("ops@example.com", "sent", 1, "alice", True),
            ]
            value["subscribers"][1].update(
                status="failed", attempts=3, last_error="550 no such user"
            )
            client.update_variable(VariableUpdate(name=name, value=value))
            sync_history(path)
            got = rows(
                path,
                "SELECT status, attempts, last_error FROM notifications"
                " WHERE job_id = $id AND email = 'lead@example.com'",
                {"id": job_id},
            )
            assert got == [("failed", 3, "550 no such user")]
        finally:
            client.delete_variable_by_name(name)


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from workspaces_jobs.reporting.sync import sync_history

    def hold(progress):
        if progress.done == 0:  # hold the file until the test says so
            print("syncing", flush=True)
            sys.stdin.readline()

    sync_history(Path(sys.argv[1]), progress=hold)
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_concurrent_syncs_one_waits_or_fails_clearly(
    first_sync: tuple[Path, SyncResult], tmp_path: Path, api_url: str
) -> None:
    path = tmp_path / "h.duckdb"
    env = {**os.environ, "PREFECT_API_URL": api_url}
    wsjobs = [sys.executable, "-m", "workspaces_jobs.cli", "sync", "--history", str(path), "--json"]
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert first.stdin is not None and first.stdout is not None
    try:
        assert first.stdout.readline().strip() == "syncing"  # it holds the file now
        impatient = subprocess.run(
            wsjobs,
            capture_output=True,
            text=True,
            env={**env, "WSJOBS_LOCK_TIMEOUT": "0.5"},
            timeout=120,
        )
        assert impatient.returncode == 6  # HistoryLocked
        errors = [line for line in impatient.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, impatient.stderr
        assert f"PID {first.pid}" in errors[0] and str(path) in errors[0]

        patient = subprocess.Popen(
            wsjobs,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "WSJOBS_LOCK_TIMEOUT": "120", "COLUMNS": "300"},
        )
        assert patient.stderr is not None
        waiting = patient.stderr.readline()
        assert "waiting up to 120 s" in waiting and f"PID {first.pid}" in waiting
        first.stdin.write("go\n")  # release: the waiting sync gets the file
        first.stdin.flush()
        out, err = patient.communicate(timeout=120)
        assert patient.returncode == 0, err
        assert json.loads(out)["jobs_added"] == 0  # the first sync had added everything
    finally:
        if first.poll() is None:
            first.stdin.write("go\n")
            first.stdin.close()
        first.wait(timeout=60)
    assert first.returncode == 0
    count, distinct = rows(path, "SELECT count(*), count(DISTINCT id) FROM jobs")[0]
    assert count == distinct > 0


@pytest.mark.slow
def test_synced_history_opens_in_the_duckdb_cli(
    first_sync: tuple[Path, SyncResult], audit_jobs: dict[str, JobFact], tmp_path: Path
) -> None:
    """An auditor's plain ``duckdb`` (the 1.5.5 CLI installed with the package) reads the
    history with the INSTALL and ATTACH lines of docs/history.md, offline."""
    from workspaces_jobs.reporting.store import extension_file

    path, _ = first_sync
    cli = Path(sys.executable).parent / "duckdb"
    assert cli.exists(), "the duckdb CLI is missing: pip install -e . installs duckdb-cli"
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("v1.5.5")
    job = audit_jobs["mixed"]
    script = (
        f"INSTALL '{extension_file('sqlite')}'; INSTALL '{extension_file('ducklake')}';"
        f" ATTACH 'ducklake:sqlite:{path}' AS history (READ_ONLY); USE history;"
        f" SELECT status, owner FROM jobs WHERE id = '{job.id}';"
    )
    out = subprocess.run(
        [str(cli), "-csv", "-noheader", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HOME": str(tmp_path)},  # a user with no extensions installed yet
    )
    assert out.stdout.strip().splitlines()[-1] == f"{job.status},{job.owner}"


def test_sync_flow_runs_the_same_sync(first_sync: tuple[Path, SyncResult], tmp_path: Path) -> None:
    """The deployable flow: same sync, a summary as its result, and not a job itself."""
    import asyncio

    from workspaces_jobs.flows.sync import sync_history_flow

    path = tmp_path / "h.duckdb"
    summary = asyncio.run(sync_history_flow(path=str(path)))
    assert summary["path"] == str(path)
    count = rows(path, "SELECT count(*) FROM jobs")[0][0]
    assert summary["jobs_added"] == count > 0
    again = sync_history(path)
    assert again.jobs_added == 0  # the flow's own run is not tagged `workspaces`


@pytest.mark.parametrize(
    ("keys", "page"),
    [
        ([1, 2, 3, 4, 5, 6, 7], 3),  # distinct keys
        ([1, 1, 2, 2, 2, 3, 3, 3, 3], 2),  # ties across page boundaries
        ([5, 5, 5, 5, 5, 5, 5], 3),  # more ties than a page: offset inside the value
        ([], 3),
        ([1, 2, 3], 3),  # exactly one full page
    ],
)
def test_keyset_pages_reads_each_row_once(keys: list[int], page: int) -> None:
    import asyncio

    from workspaces_jobs.reporting.source import keyset_pages

    table = [(k, f"id{i}") for i, k in enumerate(keys)]

    async def fetch(bound: int | None, offset: int, limit: int) -> list[tuple[int, str]]:
        hits = [r for r in table if bound is None or r[0] >= bound]
        return hits[offset : offset + limit]

    async def read_all() -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        async for rows_ in keyset_pages(fetch, lambda r: r[0], lambda r: r[1], page):
            out.extend(rows_)
        return out

    assert asyncio.run(read_all()) == table


def test_only_subscription_records_are_read_as_notifications() -> None:
    from workspaces_jobs.reporting.source import parse_notify_value

    job = "0b9e3a44-1a2b-4c3d-8e9f-0123456789ab"
    record = {"job_id": job, "subscribers": [{"email": "a@example.com"}]}
    parsed = parse_notify_value(f"wsjobs-notify-{job}", json.dumps(record))
    assert parsed is not None and parsed.job_id == job and len(parsed.subscribers) == 1
    assert parse_notify_value(f"wsjobs-notifylock-{job}", record) is None  # the notifier's lock
    assert parse_notify_value("wsjobs-notify-not-a-job", record) is None
    broken = parse_notify_value(f"wsjobs-notify-{job}", "{not json")
    assert broken is not None and broken.subscribers == []


def test_log_lines_are_written_as_they_come_when_many(
    audit_jobs: dict[str, JobFact], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of big jobs writes its log lines every LOG_FLUSH rows: same result."""
    monkeypatch.setattr(sync_module, "LOG_FLUSH", 3)
    path = tmp_path / "h.duckdb"
    result = sync_history(path)
    assert result.logs_added == rows(path, "SELECT count(*) FROM logs")[0][0]
    for job in audit_jobs.values():
        assert_matches_api(path, job)


def test_full_sync_catches_edits_to_settled_jobs(
    audit_jobs: dict[str, JobFact], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tag edited by hand on an old job moves only its `updated`: the incremental pass
    does not look at old final jobs, `--full` does (and still skips untouched ones).

    That is the API path (it cannot filter on `updated`); the direct path reads `updated`
    from the database and catches such an edit in an incremental pass too (below)."""
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("WSJOBS_SYNC_SOURCE", "api")
    monkeypatch.setattr(sync_module, "SETTLE", timedelta(0))
    monkeypatch.setattr(sync_module, "OVERLAP", timedelta(0))
    path = tmp_path / "h.duckdb"
    sync_history(path)
    job_id = audit_jobs["ok"].id
    tags_sql = "SELECT list_contains(tags, 'audited') FROM jobs WHERE id = $id"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(job_id))
        client.update_flow_run(run.id, tags=[*run.tags, "audited"])
        try:
            incremental = sync_history(path)
            assert job_id not in incremental.updated_ids
            assert rows(path, tags_sql, {"id": job_id}) == [(False,)]
            full = sync_history(path, full=True)
            assert job_id in full.updated_ids and job_id not in full.added_ids
            assert rows(path, tags_sql, {"id": job_id}) == [(True,)]
            # The direct path: an incremental pass sees the edit by its `updated` time.
            monkeypatch.setenv("WSJOBS_SYNC_SOURCE", "auto")
            client.update_flow_run(run.id, tags=list(run.tags))
            direct = sync_history(path)
            assert direct.read_path.startswith("read the Prefect database directly")
            assert job_id in direct.updated_ids
            assert rows(path, tags_sql, {"id": job_id}) == [(False,)]
        finally:
            client.update_flow_run(run.id, tags=list(run.tags))


def test_shards_of_a_full_batch_of_jobs_is_one_answer() -> None:
    """A batch of 200 jobs asks for their shards: an SQLite server refused more than 127
    tags in one filter (500, "too many arguments on function json_array"), which failed
    every API sync of over 127 jobs; the ids go in chunks."""
    import asyncio
    from uuid import uuid4

    from prefect.client.orchestration import get_client

    from workspaces_jobs.reporting.source import PAGE, SHARD_TAGS, shards_of

    async def ask() -> dict[UUID, UUID]:
        async with get_client() as client:
            return await shards_of(client, [uuid4() for _ in range(PAGE)])

    assert PAGE > SHARD_TAGS  # the case the chunks are for
    assert asyncio.run(ask()) == {}
