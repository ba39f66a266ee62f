"""Scheduling on the real server with a real worker (``wsjobs worker``, a subprocess).

Covers what a user does: ``wsjobs run --in 1m`` (Pending at once, runs on time, Completed),
``wsjobs schedule --cron`` (Pending jobs pre-created with the right expected start in the
schedule's zone, across a DST change, named ``action: info``, tagged), cancel one
occurrence, pause/resume/delete, and validation that creates nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from proctree import start_logged, stop_tree, wait_for

from workspaces_jobs.errors import BadInput
from workspaces_jobs.schedules import list_schedules, next_runs, parse_cadence

BERLIN = ZoneInfo("Europe/Berlin")


def wsjobs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )


@pytest.fixture(scope="module")
def worker(wsjobs_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``wsjobs worker`` as a user starts it, stopped with its flow runs at the end."""
    proc = start_logged(
        [sys.executable, "-m", "workspaces_jobs.cli", "worker", "--name", "test-worker"],
        log=Path(wsjobs_env["home"]) / "test-worker.log",
        env=os.environ,
    )
    try:
        yield proc
    finally:
        stop_tree(proc)


def _runs(deployment_id: str, states: list[str] | None = None) -> list[Any]:
    """Flow runs of a deployment (also once it is deleted), by expected start."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[UUID(deployment_id)]))
    if states:
        flt.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=states))  # type: ignore[arg-type]
    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200
            )
        )


def _schedules() -> dict[str, dict[str, Any]]:
    out = wsjobs("schedules", "--json")
    assert out.returncode == 0, out.stderr
    return {s["name"]: s for s in json.loads(out.stdout)}


# --- pure rules, with an injected clock ---------------------------------------------------


def test_cron_next_runs_keep_local_time_across_dst() -> None:
    """02:30 does not exist on 2027-03-28 in Berlin; 01:30 does, at +01:00 then +02:00."""
    cadence = parse_cadence(cron="30 1 27-29 3 *", tz="Europe/Berlin")
    runs = next_runs(cadence.schedule, now=datetime(2026, 12, 1, tzinfo=UTC))
    assert runs == [
        datetime(2027, 3, 27, 0, 30, tzinfo=UTC),
        datetime(2027, 3, 28, 0, 30, tzinfo=UTC),
        datetime(2027, 3, 28, 23, 30, tzinfo=UTC),  # CEST: 01:30 local is 23:30 UTC
    ]


@pytest.mark.parametrize(
    ("now", "at", "expected"),
    [
        # HH:MM is the next such local time: one second before midnight and just after.
        (datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), "00:00", datetime(2026, 12, 1, 0, 0)),
        (datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC), "00:00", datetime(2026, 12, 2, 0, 0)),
        (datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC), "2026-12-01 02:00", datetime(2026, 12, 1, 2)),
    ],
)
def test_at_is_the_next_local_time(now: datetime, at: str, expected: datetime) -> None:
    cadence = parse_cadence(at=at, tz="UTC", now=now)
    assert cadence.first == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "give exactly one of"),
        ({"cron": "0 2 * * *", "every": "1h"}, "--cron and --every"),
        ({"cron": "61 2 * * *"}, "bad cron '61 2 * * *'"),
        ({"cron": "0 2 * * *", "tz": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        ({"at": "2026-11-30 23:00"}, "is in the past"),
        ({"at": "25:00"}, "bad time '25:00'"),
        ({"in_": "soon"}, "bad --in 'soon'"),
        ({"every": "10s"}, "too often"),
    ],
)
def test_cadence_errors(kwargs: dict[str, str], words: str) -> None:
    now = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    with pytest.raises(BadInput, match=re.escape(words)):
        parse_cadence(now=now, **{"tz": "UTC", **kwargs})


# --- real server, real worker ---------------------------------------------------------------
# These tests read runs in-process (`_runs`, `_schedules_now`): they ask for the session's
# server, else Prefect's client would fall back to an ephemeral API of its own that the CLI
# and the worker never see (seen: "pre-created runs" timed out when this module ran alone).


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nope", "--all", "--cron", "0 2 * * *"], "unknown action 'nope'"),
        (["ok", "--devices", "zz9", "--cron", "0 2 * * *"], "zz9"),
        (["ok", "--all", "--param", "bogus=1", "--cron", "0 2 * * *"], "bogus"),
        (["ok", "--all", "--cron", "0 2 * *"], "bad cron"),
        (["ok", "--all", "--cron", "0 2 * * *", "--tz", "Nowhere/City"], "unknown time zone"),
        (["ok", "--all", "--at", "2001-01-01 00:00"], "in the past"),
        (["ok", "--all", "--cron", "0 2 * * *", "--name", "bad name!"], "bad schedule name"),
    ],
)
def test_schedule_validation_creates_nothing(args: list[str], words: str) -> None:
    # What the user runs is the CLI; what exists before and after is read in-process, as
    # `wsjobs schedules --json` would print it (two CLI processes less per case: ~30 s of CI).
    before = _schedules_now()
    out = wsjobs("schedule", *args)
    assert out.returncode == 4, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], out.stderr
    assert _schedules_now() == before


def _schedules_now() -> list[dict[str, Any]]:
    """Every schedule as `wsjobs schedules --json` shows it, next runs counted from one
    pinned instant (so two reads compare equal whatever the clock did between them)."""
    return [s.to_dict() for s in list_schedules(now=datetime(2026, 12, 1, tzinfo=UTC))]


@pytest.mark.usefixtures("prefect_server")
def test_cron_schedule_precreates_pending_jobs_in_its_zone() -> None:
    """Runs pre-created by Prefect's scheduler: Pending jobs, named, tagged, DST-correct."""
    out = wsjobs(
        "schedule", "ok", "--devices", "t1", "--info", "spring patch", "--owner", "carol",
        "--cron", "30 1 27-29 3 *", "--tz", "Europe/Berlin", "--name", "dst-check", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["cadence"] == "cron 30 1 27-29 3 *" and made["timezone"] == "Europe/Berlin"
    runs = wait_for("3 pre-created runs", lambda: _runs(made["id"]) or None, 60)
    assert len(runs) >= 3
    local = [r.expected_start_time.astimezone(BERLIN) for r in runs[:3]]
    assert [(t.month, t.day, t.hour, t.minute) for t in local] == [
        (3, 27, 1, 30),
        (3, 28, 1, 30),
        (3, 29, 1, 30),
    ]
    # 2027-03-28 02:00 CET -> 03:00 CEST (or the same change in a later year)
    offsets = [t.utcoffset() for t in local]
    assert offsets[0] == timedelta(hours=1) and offsets[2] == timedelta(hours=2)
    for run in runs:
        assert {"workspaces", "action:ok", "owner:carol"} <= set(run.tags)
        assert run.state.type.value == "SCHEDULED"
    listed = _schedules()["dst-check"]
    assert listed["action"] == "ok" and listed["target"] == ["t1"]
    assert listed["created_by"] == "carol" and listed["paused"] is False
    expected = [r.expected_start_time.astimezone(UTC) for r in runs[:3]]
    assert [datetime.fromisoformat(t) for t in listed["next_runs"]] == expected
    # a second schedule with the same name is refused, nothing else changes
    again = wsjobs("schedule", "ok", "--all", "--cron", "0 2 * * *", "--name", "dst-check")
    assert again.returncode == 4 and "exists" in again.stderr
    assert wsjobs("schedules", "delete", "dst-check").returncode == 0
    assert "dst-check" not in _schedules()
    assert _runs(made["id"]) == []


@pytest.mark.usefixtures("prefect_server")
def test_run_in_1m_and_a_minutely_schedule(worker: subprocess.Popen[bytes]) -> None:
    """The worker runs a later job on time; pause, resume, cancel one, delete."""
    later = wsjobs("run", "ok", "--devices", "t1", "--in", "1m", "--info", "later", "--json")
    assert later.returncode == 0, later.stderr
    job = json.loads(later.stdout)
    expected = datetime.fromisoformat(job["expected_start"])
    shown = json.loads(wsjobs("show", job["id"], "--json", "--no-logs").stdout)
    assert shown["status"] == "Pending" and shown["name"] == "ok: later"

    made = json.loads(
        wsjobs(
            "schedule", "ok", "--devices", "t2", "--info", "minutely", "--cron", "* * * * *",
            "--tz", "UTC", "--name", "minutely", "--json",
        ).stdout
    )  # fmt: skip
    dep = made["id"]
    pending = wait_for("pre-created runs", lambda: _runs(dep, ["SCHEDULED"]) or None, 60)
    # the worker's naming sweep gives them the job name
    wait_for(
        "runs named 'ok: minutely'",
        lambda: all(r.name == "ok: minutely" for r in _runs(dep, ["SCHEDULED"])) or None,
        30,
    )
    # cancel one occurrence (a later one, so it cannot start meanwhile)
    victim = str(pending[-1].id)
    out = wsjobs("cancel", victim, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["status"] == "Canceled by the user"

    assert wsjobs("schedules", "pause", "minutely").returncode == 0
    assert _schedules()["minutely"]["paused"] is True
    wait_for("no future runs while paused", lambda: not _runs(dep, ["SCHEDULED"]) or None, 30)
    assert wsjobs("schedules", "resume", "minutely").returncode == 0
    wait_for("runs again after resume", lambda: _runs(dep, ["SCHEDULED"]) or None, 60)

    # the later job starts on time (never before) and ends Completed
    def finished() -> dict[str, Any] | None:
        data = json.loads(wsjobs("show", job["id"], "--json", "--no-logs").stdout)
        return data if data["status"] not in ("Pending", "In progress") else None

    done = wait_for("the --in 1m job to end", finished, 150, poll=3)
    assert done["status"] == "Completed"
    started = datetime.fromisoformat(done["started"])
    assert expected - timedelta(seconds=3) <= started, (expected, started)

    # one minutely occurrence runs; delete keeps it and the canceled one, drops the future
    ran = wait_for(
        "a minutely run to complete",
        lambda: _runs(dep, ["COMPLETED"]) or None,
        150,
        poll=3,
    )
    assert wsjobs("schedules", "delete", "minutely").returncode == 0
    left = {str(r.id): r.state.type.value for r in _runs(dep)}
    assert left.get(str(ran[0].id)) == "COMPLETED"
    assert left.get(victim) == "CANCELLED"
    assert "SCHEDULED" not in left.values()
