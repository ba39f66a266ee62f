"""Who did what: every action from the CLI leaves an activity row in the (real) history.

Real parts: the session's Prefect server, real jobs run by real executors, the CLI as a
subprocess, the DuckLake history under the session's ``WSJOBS_HOME``. Rows are found by
the job id or schedule name each test made, so the tests run in any order beside others
that write activity too.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from workspaces_jobs import activity
from workspaces_jobs.jobs import job_state, submit_job, wait_job
from workspaces_jobs.reporting.store import open_store

pytestmark = pytest.mark.usefixtures("prefect_server")

ME = getpass.getuser()


def wsjobs(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def until(check: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def rows(where: str, value: str) -> list[tuple[str, str, str, str | None, str | None, str]]:
    assert where in ("job_id", "schedule", "detail")  # an allowlisted column
    with open_store(read_only=True) as con:
        return [
            tuple(r)  # type: ignore[misc]
            for r in con.cursor()
            .execute(
                f"SELECT who, action, source, job_id, schedule, detail FROM activity"
                f" WHERE {where} LIKE $v ORDER BY time, action",
                {"v": value},
            )
            .fetchall()
        ]


def test_run_cancel_notify_from_the_cli_are_recorded_as_the_os_user() -> None:
    ran = json.loads(wsjobs("run", "ok", "--devices", "t1", "--no-wait", "--json").stdout)["id"]
    pending = submit_job("ok", target=["t1"], start=False)
    # --by is free text: the job records it as its canceler, the activity log the OS user
    wsjobs("notify", pending, "--email", "ops@example.com")
    wsjobs("cancel", pending, "--by", "someone-else")
    assert rows("job_id", ran) == [(ME, "run", "cli", ran, None, "ok")]
    assert rows("job_id", pending) == [
        (ME, "notify", "cli", pending, None, "to ops@example.com"),
        (ME, "cancel", "cli", pending, None, "canceled by someone-else (as someone-else)"),
    ]
    wait_job(ran, timeout=120)


@pytest.mark.slow
def test_kill_and_rerun_from_the_cli() -> None:
    running = submit_job("slow", target=["t1"], params={"seconds": "60"})
    until(lambda: job_state(running)[0].value == "In progress", what="slow job running")
    wsjobs("kill", running)
    rerun = json.loads(wsjobs("rerun", running, "--json").stdout)["id"]
    assert rows("job_id", running) == [
        (ME, "kill", "cli", running, None, f"killed by {ME}"),
        (ME, "rerun", "cli", running, None, f"as job {rerun}"),
    ]
    assert rows("job_id", rerun) == [(ME, "run", "cli", rerun, None, f"slow, rerun of {running}")]
    from workspaces_jobs.lifecycle import kill_job

    until(lambda: job_state(rerun)[0].value != "Pending", what="rerun started")
    kill_job(rerun, who="cleanup")  # don't leave it running


def test_schedule_filter_and_view_changes_are_recorded() -> None:
    name = f"act-{uuid.uuid4().hex[:6]}"
    wsjobs("schedule", "ok", "--devices", "t1", "--cron", "0 3 * * *", "--name", name)
    wsjobs("schedules", "pause", name)
    wsjobs("schedules", "delete", name)
    assert [r[:3] + r[4:5] for r in rows("schedule", name)] == [
        (ME, "schedule-create", "cli", name),
        (ME, "schedule-pause", "cli", name),
        (ME, "schedule-delete", "cli", name),
    ]
    flt = f"act-{uuid.uuid4().hex[:6]}"
    wsjobs("filters", "save", flt, "--status", "Error")
    wsjobs("filters", "delete", flt)
    found = rows("detail", f"{flt}%")
    assert [(r[0], r[1], r[2]) for r in found] == [
        (ME, "filter-save", "cli"),
        (ME, "filter-delete", "cli"),
    ]


def test_actions_in_a_request_take_the_requests_actor_and_source() -> None:
    """The web view and the API run the shared functions inside ``acting_as``: the
    signed-in user, never the server's OS user, and a declared ``by`` stays in detail."""
    pending = submit_job("ok", target=["t1"], start=False)
    from workspaces_jobs.lifecycle import cancel_job

    with activity.acting_as("alice", "web"):
        cancel_job(pending)
    assert rows("job_id", pending) == [
        ("alice", "cancel", "web", pending, None, "canceled by alice")
    ]


def test_notes_round_trip_and_a_failed_write_never_undoes_the_action(
    tmp_path: object,
) -> None:
    job = f"note-{uuid.uuid4().hex}"
    at = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    note = activity.add_note(job, "bob", "  rerun after the disk was cleaned  ", at=at)
    assert [n.to_dict() for n in activity.job_notes(job)] == [
        {
            "id": note.id,
            "job_id": job,
            "time": at.isoformat(),
            "author": "bob",
            "text": "rerun after the disk was cleaned",
        }
    ]
    assert [(a.who, a.action, a.time) for a in activity.job_activity(job)] == [("bob", "note", at)]
    with pytest.raises(ValueError, match="the note is empty"):
        activity.add_note(job, "bob", "   ")
    with pytest.raises(ValueError, match="keep it under 4000"):
        activity.add_note(job, "bob", "x" * 4001)
    # an unwritable history: the row is lost with a warning, the caller goes on
    bad = f"{tmp_path}/not-a-folder"
    with open(bad, "w") as fh:
        fh.write("x")
    assert activity.record("bob", "cancel", job_id=job, source="cli", history=f"{bad}/h") is False


def _deployment_runs(deployment_id: str) -> list[object]:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    flt = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[UUID(deployment_id)]))
    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(flow_run_filter=flt))


def test_a_schedules_runs_are_recorded_by_the_sync_in_the_one_history(tmp_path: object) -> None:
    """Source ``schedule``: the run Prefect's scheduler made is recorded from the job's own
    facts by the history sync (who = the schedule's owner), once however often it syncs;
    the worker's naming loop writes nothing (a team worker has no history of its own)."""
    import asyncio
    from pathlib import Path

    from prefect.client.orchestration import get_client

    from workspaces_jobs.reporting.sync import sync_history
    from workspaces_jobs.schedules import create_schedule, delete_schedule, parse_cadence
    from workspaces_jobs.worker import name_pending_runs

    name, owner = f"sched-{uuid.uuid4().hex[:6]}", f"carol-{uuid.uuid4().hex[:4]}"
    made = create_schedule(
        "ok", target=["t1"], cadence=parse_cadence(in_="3h"), owner=owner, name=name
    )
    try:
        runs = until(lambda: _deployment_runs(made.deployment_id), 120, "the scheduler's run")
        assert isinstance(runs, list) and len(runs) == 1
        job = str(runs[0].id)  # type: ignore[attr-defined]

        async def name_them() -> int:
            async with get_client() as client:
                return await name_pending_runs(client)

        asyncio.run(name_them())
        history = Path(str(tmp_path)) / "team.ducklake"
        assert not history.exists()
        sync_history(history)
        for _ in range(2):  # a second pass sees the job again: still one row
            with open_store(history, read_only=True) as con:
                got = (
                    con.cursor()
                    .execute(
                        "SELECT who, action, source, job_id, schedule, detail FROM activity"
                        " WHERE job_id = $j",
                        {"j": job},
                    )
                    .fetchall()
                )
            assert len(got) == 1, got
            who, action, source, job_id, schedule, detail = got[0]
            assert (who, action, source, job_id, schedule) == (owner, "run", "schedule", job, name)
            assert detail.startswith("ok, due ") and detail.endswith("Z")
            sync_history(history)
        # the worker wrote no row to this host's own history either
        from workspaces_jobs.reporting.store import locate

        if locate(None).exists():
            assert rows("job_id", job) == []
    finally:
        delete_schedule(name)


def test_rule_and_webhook_changes_are_recorded() -> None:
    rule = f"act-{uuid.uuid4().hex[:6]}"
    wsjobs("notify", "--filter", "pending", "--email", "ops@example.com", "--rule", rule)
    wsjobs("notify", "--pause", rule)
    wsjobs("notify", "--resume", rule)
    wsjobs("notify", "--remove-rule", rule)
    assert [(r[0], r[1], r[2], r[5]) for r in rows("detail", f"rule {rule}%")] == [
        (ME, "rule-add", "cli", f"rule {rule}: filter pending: ops@example.com"),
        (ME, "rule-pause", "cli", f"rule {rule}"),
        (ME, "rule-resume", "cli", f"rule {rule}"),
        (ME, "rule-remove", "cli", f"rule {rule}: filter pending"),
    ]
    pending = submit_job("ok", target=["t1"], start=False)
    hook = "http://127.0.0.1:9/hook"
    wsjobs("notify", pending, "--webhook", hook)
    wsjobs("notify", pending, "--remove", "--webhook", hook)
    assert [(r[0], r[1], r[2], r[5]) for r in rows("job_id", pending)] == [
        (ME, "notify", "cli", f"to {hook}"),
        (ME, "unsubscribe", "cli", hook),
    ]
    from workspaces_jobs.lifecycle import cancel_job

    cancel_job(pending, who="cleanup")
