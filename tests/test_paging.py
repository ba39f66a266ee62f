"""Every view of a job is complete when it has more steps than one API page (200 rows).

One real job of 210 local devices (more than a page of task runs and of log lines) is
read back by ``wsjobs show``, the web detail view (live path), the history sync and the
notify email, and each must see every device and step. The keyset rule itself is
checked on a hand-made ordered list (ties across whole pages included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from smtpserver import PASSWORD, USER, SmtpServer, free_port, text_body

from workspaces_jobs import apipages, apiread, jobfacts
from workspaces_jobs.jobfacts import DeviceFact, JobFact, StepFact
from workspaces_jobs.jobs import submit_job, wait_job
from workspaces_jobs.notify import subscribe
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.sync import settled_at, sync_history

DEVICES = [f"p{n:03d}" for n in range(210)]


@dataclass
class BigJob:
    id: str
    email: str
    smtp: SmtpServer
    tmp: Path


pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server"),  # real jobs on the session server
]


@pytest.fixture(scope="module")
def big_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigJob]:
    tmp = tmp_path_factory.mktemp("paging")
    (tmp / "inventory.yaml").write_text(
        "devices:\n" + "".join(f"  - {{name: {d}, transport: local}}\n" for d in DEVICES)
    )
    actions = tmp / "actions"
    actions.mkdir()
    (actions / "one-line.yaml").write_text(
        "name: one-line\ndescription: One quick step that prints one line.\n"
        'steps:\n  - name: say\n    script: echo "said on $WSJOBS_DEVICE"\n'
    )
    smtp = SmtpServer(free_port()).start()
    patch = pytest.MonkeyPatch()
    for key, value in {
        "WSJOBS_INVENTORY": str(tmp / "inventory.yaml"),
        "WSJOBS_ACTIONS": str(actions),
        "WSJOBS_MAX_PARALLEL": "32",
        "WSJOBS_SMTP_HOST": "127.0.0.1",
        "WSJOBS_SMTP_PORT": str(smtp.port),
        "WSJOBS_SMTP_USER": USER,
        "WSJOBS_SMTP_PASSWORD": PASSWORD,
        "WSJOBS_SMTP_FROM": "jobs@example.com",
        "WSJOBS_SMTP_TIMEOUT": "5",
    }.items():
        patch.setenv(key, value)
    email = f"big-{uuid.uuid4().hex[:8]}@example.com"
    try:
        job_id = submit_job("one-line", target=["all"], info="paging")
        assert wait_job(job_id, timeout=240).value == "Completed"
        _wait_steps_recorded(job_id)
        yield BigJob(job_id, email, smtp, tmp)
    finally:
        patch.undo()
        smtp.stop()


def _wait_steps_recorded(job_id: str, timeout: float = 180) -> None:
    """The server records task-run states from events, after the flow's own final state
    (tens of seconds behind on a loaded machine): wait until all 210 are final, so the
    views below are checked on paging alone, not on that lag."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = apipages.task_runs(client, [UUID(job_id)])
            if len(runs) == len(DEVICES) and all(r.state_type == "COMPLETED" for r in runs):
                return
            assert time.monotonic() < deadline, f"{len(runs)} task runs after {timeout} s"
            time.sleep(1)


def test_show_lists_every_device_step_and_line(big_job: BigJob) -> None:
    env = dict(
        os.environ,
        WSJOBS_INVENTORY=str(big_job.tmp / "inventory.yaml"),
        WSJOBS_ACTIONS=str(big_job.tmp / "actions"),
    )
    out = subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", "show", big_job.id, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert sorted(d["device"] for d in data["devices"]) == DEVICES
    assert {d["status"] for d in data["devices"]} == {"Completed"}
    assert sorted(s["device"] for s in data["steps"]) == DEVICES
    said = {line["message"] for line in data["logs"] if line.get("stream") == "out"}
    assert said == {f"said on {d}" for d in DEVICES}


def test_web_detail_reads_a_live_job_whole(big_job: BigJob) -> None:
    from workspaces_jobs.web.detail import load_job

    history = big_job.tmp / "empty.duckdb"

    @contextmanager
    def con_factory() -> Iterator[object]:
        with open_store(history) as con:
            yield con

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WSJOBS_INVENTORY", str(big_job.tmp / "inventory.yaml"))
        detail = load_job(big_job.id, con_factory)
    assert detail is not None and detail.source == "live"
    assert sorted(d.device for d in detail.job.devices) == DEVICES
    assert {d.status for d in detail.job.devices} == {"Completed"}
    assert sorted(detail.steps_by_device) == DEVICES


def test_sync_stores_every_step_device_and_line(big_job: BigJob) -> None:
    history = big_job.tmp / "history.duckdb"
    sync_history(history, full=True)
    with open_store(history, read_only=True) as con:
        steps = con.execute("SELECT count(*) FROM steps WHERE job_id = $id", {"id": big_job.id})
        assert steps.fetchone() == (len(DEVICES),)
        devices = con.execute(
            "SELECT device, status FROM job_devices WHERE job_id = $id ORDER BY device",
            {"id": big_job.id},
        ).fetchall()
        lines = con.execute(
            "SELECT count(DISTINCT device) FROM logs"
            " WHERE job_id = $id AND message LIKE 'said on %'",
            {"id": big_job.id},
        ).fetchone()
    assert devices == [(d, "Completed") for d in DEVICES]
    assert lines == (len(DEVICES),)


def _sync_settled(big_job: BigJob, name: str, after: timedelta) -> tuple[bool, list[str]]:
    """Sync into a fresh history with the clock ``after`` past the job's end: is the job
    settled, and which of its devices are Pending?"""
    with get_client(sync_client=True) as client:
        ended = client.read_flow_run(UUID(big_job.id)).end_time
    assert ended is not None
    history = big_job.tmp / f"{name}.duckdb"
    sync_history(history, full=True, clock=lambda: ended + after)
    with open_store(history, read_only=True) as con:
        row = con.execute("SELECT settled FROM sync_jobs WHERE job_id = $id", {"id": big_job.id})
        settled = row.fetchone()
        pending = con.execute(
            "SELECT device FROM job_devices WHERE job_id = $id AND status = 'Pending'",
            {"id": big_job.id},
        ).fetchall()
    assert settled is not None
    return bool(settled[0]), [p[0] for p in pending]


def test_sync_settles_a_big_job_only_when_every_device_step_is_recorded(
    big_job: BigJob,
) -> None:
    """Task-run states trail a big job's final state (over a minute under load): the sync
    must not settle a job while a planned device × step is missing, or the history keeps
    those devices Pending forever. The lag is stood in for by a plan larger than what
    the API has: one more device in the inventory, one more step in the action."""
    # Everything recorded, past the settle window: settled.
    assert _sync_settled(big_job, "whole", timedelta(minutes=2)) == (True, [])
    # A planned device with no step yet: not settled, shown Pending, re-read later...
    grown = big_job.tmp / "grown.yaml"
    grown.write_text(
        (big_job.tmp / "inventory.yaml").read_text() + "  - {name: p210, transport: local}\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WSJOBS_INVENTORY", str(grown))
        assert _sync_settled(big_job, "device", timedelta(minutes=2)) == (False, ["p210"])
        # ...until the steps window has passed: the inventory changed since the job ran.
        assert _sync_settled(big_job, "late", timedelta(hours=2)) == (True, ["p210"])
    # Every device has its first step, but the action has a second one not recorded yet.
    longer = big_job.tmp / "longer"
    longer.mkdir(exist_ok=True)
    (longer / "one-line.yaml").write_text(
        "name: one-line\ndescription: Two steps.\nsteps:\n"
        "  - name: say\n    script: echo said\n  - name: again\n    script: echo again\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WSJOBS_ACTIONS", str(longer))
        assert _sync_settled(big_job, "step", timedelta(minutes=2)) == (False, [])


def test_email_lists_every_device(big_job: BigJob) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WSJOBS_INVENTORY", str(big_job.tmp / "inventory.yaml"))
        subscribe(big_job.id, [big_job.email], now=True)  # a finished job: emailed at once
    [message] = big_job.smtp.inbox.wait_for(big_job.email, 1, timeout=30)
    body = text_body(message)
    listed = [
        line.split()[0]
        for line in body.splitlines()
        if line.startswith("  p") and "Completed" in line
    ]
    assert sorted(listed) == DEVICES, body[:2000]


@pytest.mark.parametrize(
    "keys",
    [
        [],
        [1, 2, 3],
        list(range(7)),  # exactly full pages then an empty one
        [1] * 7 + [2] * 2,  # more ties than a page: offset inside the value
        [1, 1, 2, 2, 2, 2, 3, 4],
        sorted([5, 1, 3, 3, 3, 9, 9, 9, 9, 9, 9, 10, 11]),
    ],
)
def test_keyset_reads_every_row_once(keys: list[int]) -> None:
    rows = list(enumerate(keys))  # (id, key), ordered by key then id
    rows.sort(key=lambda r: (r[1], r[0]))
    calls = []

    def fetch(bound: int | None, offset: int, limit: int) -> list[tuple[int, int]]:
        calls.append((bound, offset))
        past = [r for r in rows if bound is None or r[1] >= bound]
        return past[offset : offset + limit]

    seen = [
        r for page in apipages.keyset_pages(fetch, lambda r: r[1], lambda r: r[0], 3) for r in page
    ]
    assert seen == rows
    assert len(calls) <= len(rows) + 2  # no endless loop on ties


T0 = datetime(2026, 3, 31, 23, 59, 30, tzinfo=UTC)


def _fact(status: str, reason: str | None, ended: datetime | None, device: str) -> JobFact:
    job = JobFact(
        id="j", name="", action="a", info="", owner="o", status=status, reason=reason,
        prefect_state_type=None, prefect_state_name=None, state_message=None, created=None,
        started=None, ended=ended, expected_start=None, progress=None, deployment_id=None,
        parameters={}, tags=[], canceled_by=None, rerun_of=None, updated=None,
    )  # fmt: skip
    job.devices = [DeviceFact("j", "d1", "Completed", 1, 0, None, None)]
    job.devices.append(DeviceFact("j", "d2", device, 0, 0, None, None))
    return job


@pytest.mark.parametrize(
    ("status", "reason", "ended", "device", "missing"),
    [
        ("Completed", None, T0 - timedelta(seconds=5), "Pending", True),
        ("Completed with errors", None, T0 - timedelta(seconds=5), "Pending", True),
        ("Error", "failed", T0 - timedelta(seconds=5), "Pending", True),
        ("Completed", None, T0 - timedelta(seconds=5), "Completed", False),
        ("Completed", None, T0 - timedelta(minutes=2), "Pending", False),  # old: inventory grew
        ("Error", "crashed", T0 - timedelta(seconds=5), "Pending", False),  # never ran it
        ("Canceled by the user", None, T0 - timedelta(seconds=5), "Pending", False),
        ("In progress", None, None, "Pending", False),
    ],
)
def test_read_job_waits_for_unrecorded_steps_of_a_just_ended_job(
    status: str, reason: str | None, ended: datetime | None, device: str, missing: bool
) -> None:
    job = _fact(status, reason, ended, device)
    assert jobfacts.steps_missing(job, T0, apiread.RECENT_END) is missing


def _step(device: str, status: str, critical: bool = True) -> StepFact:
    return StepFact(
        id=f"{device}-{status}", job_id="j", device=device, step="s", position=1,
        critical=critical, status=status, state_name=None, exit_code=None, message=None,
        started=None, ended=None,
    )  # fmt: skip


M2, H2 = timedelta(minutes=2), timedelta(hours=2)
BOTH = [("d1", "Completed"), ("d2", "Completed")]


@pytest.mark.parametrize(
    ("status", "reason", "age", "steps", "planned_steps", "settled"),
    [
        ("Completed", None, M2, BOTH, 1, True),
        ("Completed", None, timedelta(seconds=30), BOTH, 1, False),  # lines may still come
        ("Completed", None, M2, [("d1", "Completed")], 1, False),  # d2's step not listed yet
        ("Completed", None, H2, [("d1", "Completed")], 1, True),  # the plan changed since
        ("Completed", None, M2, [("d1", "Completed"), ("d2", "Running")], 1, False),
        ("Completed", None, M2, BOTH, 2, False),  # each device's second step not listed yet
        ("Completed", None, M2, BOTH, None, True),  # a Python action: step count unknown
        ("Error", "failed", M2, [("d1", "Failed"), ("d2", "Failed")], 3, True),  # stopped
        ("Error", "failed", M2, [("d1", "Failed")], 3, False),
        ("Canceled by the user", None, M2, [("d1", "Completed")], 3, True),  # d2 never ran
        ("Error", "crashed", H2, [("d1", "Running")], 3, False),  # may still complete
        ("Error", "crashed", timedelta(hours=25), [("d1", "Running")], 3, True),
        ("In progress", None, H2, BOTH, 1, False),
    ],
)  # fmt: skip
def test_sync_settle_rule(
    status: str,
    reason: str | None,
    age: timedelta,
    steps: list[tuple[str, str]],
    planned_steps: int | None,
    settled: bool,
) -> None:
    job = _fact(status, reason, T0 - age if status != "In progress" else None, "Pending")
    job.steps = [_step(d, s) for d, s in steps]
    devices = [DeviceFact("j", d, "Completed", 0, 0, None, None) for d in ("d1", "d2")]
    assert settled_at(job, devices, T0, planned_steps) is settled
