"""The team setup end to end: PostgreSQL, a Prefect server on it, three workers, two sites.

One module-scoped stack (tests/teamstack.py runs the README's "Running for real" recipe
line by line): a real PostgreSQL from Debian's package on a free loopback port, ``prefect
server start`` on it with credentials, the ``workspaces`` pool with the queues ``lyon``
and ``berlin``, ``prefect deploy --all`` plus one ``run-action-<site>`` deployment per
site, and three ``wsjobs worker`` processes (lyon-1, lyon-2, berlin-1). Jobs then behave
exactly as on the embedded default: statuses, logs, progress, cancel while Pending, kill
while running, an email through a real aiosmtpd, and a sync into a history.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from smtpserver import PASSWORD, USER, SmtpServer, free_port, text_body
from teamstack import RECIPE, REPO, SERVER_VARS, SITES, Team, team, wait_for

DATA = Path(__file__).parent / "data"
JOB_TAGS = ["workspaces", "owner:team-ops"]


def _section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 4)
    return text[start : end if end > 0 else None]


def test_readme_team_recipe_is_the_one_the_test_runs() -> None:
    recipe = _section("Running for real")
    for name, line in RECIPE.items():
        spelled = line in recipe or all(line.replace("$SITE", s) in recipe for s in SITES)
        assert spelled, f"README's team recipe lacks the {name} line: {line}"
    for var in SERVER_VARS:
        assert f"{var}=" in recipe, f"README's team recipe does not set {var}"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Team]:
    extra = {
        "WSJOBS_INVENTORY": str(DATA / "inventory.yaml"),
        "WSJOBS_ACTIONS": str(DATA / "actions"),
        "WSJOBS_COMPANIONS": "",
        "WSJOBS_SMTP_HOST": "127.0.0.1",
        "WSJOBS_SMTP_PORT": str(smtp.port),
        "WSJOBS_SMTP_USER": USER,
        "WSJOBS_SMTP_PASSWORD": PASSWORD,
        "WSJOBS_SMTP_FROM": "jobs@example.com",
        "WSJOBS_SMTP_TIMEOUT": "5",
    }
    with team(tmp_path_factory.mktemp("team"), extra_env=extra) as running:
        yield running


def _job(stack: Team, site: str, action: str, target: list[str], **params: str) -> str:
    return stack.run_deployment(
        site,
        {"action": action, "target": target, "params": params, "info": f"team {action}",
         "owner": "team-ops"},
        tags=[*JOB_TAGS, f"action:{action}"],
    )  # fmt: skip


def _submitted_by(stack: Team, run_id: str) -> list[str]:
    """The workers that started this flow run (Prefect's worker logs each submission)."""
    return [
        name
        for name in stack.workers
        if f"submitting flow run '{run_id}'" in stack.log(name).read_text(errors="replace")
    ]


def _show(stack: Team, job_id: str) -> dict[str, Any]:
    done = stack.cli("wsjobs", "show", job_id, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def site_jobs(stack: Team) -> dict[str, dict[str, Any]]:
    """One job per site, started together; both waited for."""
    ids = {
        "lyon": _job(stack, "lyon", "mixed", ["all"]),
        "berlin": _job(stack, "berlin", "ok", ["t1", "t2"]),
    }
    return {site: stack.wait_final(run_id) for site, run_id in ids.items()}


@pytest.mark.slow
def test_site_jobs_end_with_their_status_logs_and_progress(
    stack: Team, site_jobs: dict[str, dict[str, Any]]
) -> None:
    lyon, berlin = site_jobs["lyon"], site_jobs["berlin"]
    assert (lyon["state"]["type"], lyon["state"]["name"]) == ("COMPLETED", "Completed with errors")
    assert (berlin["state"]["type"], berlin["state"]["name"]) == ("COMPLETED", "Completed")
    assert (lyon["work_queue_name"], berlin["work_queue_name"]) == ("lyon", "berlin")
    # Each ran on a worker of its own site (a worker logs the runs it submits; two workers
    # of one queue may both try a run: the server lets one of them claim it).
    assert _submitted_by(stack, berlin["id"]) == ["berlin-1"]
    assert set(_submitted_by(stack, lyon["id"])) in ({"lyon-1"}, {"lyon-2"}, {"lyon-1", "lyon-2"})

    job = _show(stack, lyon["id"])
    assert job["status"] == "Completed with errors"
    assert job["progress"] == 100.0
    assert {d["device"]: d["status"] for d in job["devices"]} == {
        "t1": "Completed",
        "t2": "Completed",
        "t3": "Completed with errors",
    }
    lines = {(g["device"], g["step"], g["stream"], g["message"]) for g in job["logs"]}
    assert ("t3", "check", "err", "check failed") in lines
    assert ("t1", "finish", "out", "finished") in lines
    assert _show(stack, berlin["id"])["status"] == "Completed"


@pytest.fixture(scope="module")
def canceled_job(stack: Team) -> dict[str, Any]:
    """A job due in an hour (Pending), canceled with ``wsjobs cancel``: it never runs."""
    [dep] = stack.post(
        "/deployments/filter", {"deployments": {"name": {"any_": ["run-action-lyon"]}}}
    )
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    run = stack.post(
        f"/deployments/{dep['id']}/create_flow_run",
        {
            "parameters": {"action": "ok", "target": ["t1"], "info": "later", "owner": "team-ops"},
            "tags": [*JOB_TAGS, "action:ok"],
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
        },
    )
    done = stack.cli("wsjobs", "cancel", run["id"], "--by", "team-lead", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)[0]["status"] == "Canceled by the user"
    return stack.flow_run(run["id"])


@pytest.mark.slow
def test_cancel_pending_job_on_the_team_server(stack: Team, canceled_job: dict[str, Any]) -> None:
    assert canceled_job["state"]["type"] == "CANCELLED"
    assert canceled_job["run_count"] == 0
    assert "canceled-by:team-lead" in canceled_job["tags"]
    assert _show(stack, canceled_job["id"])["status"] == "Canceled by the user"


def _step_pids(job_id: str) -> list[int]:
    """Live processes of the job's steps on this host (they carry ``WSJOBS_JOB_ID``)."""
    marker = f"WSJOBS_JOB_ID={job_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def killed_job(stack: Team, smtp: SmtpServer) -> dict[str, Any]:
    """A running job on a berlin worker, subscribed to by email, then killed."""
    job_id = _job(stack, "berlin", "slow", ["t1"], seconds="300")
    wait_for("the step to start", lambda: _step_pids(job_id) or None, 240)
    sub = stack.cli("wsjobs", "notify", job_id, "--email", "team@example.com")
    assert sub.returncode == 0, sub.stdout + sub.stderr
    done = stack.cli("wsjobs", "kill", job_id, "--by", "team-killer", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    run = stack.wait_final(job_id, timeout=180)
    wait_for("the step's processes to end", lambda: not _step_pids(job_id) or None, 60)
    return run


@pytest.mark.slow
def test_kill_reaches_the_worker_and_the_subscriber_gets_the_email(
    stack: Team, killed_job: dict[str, Any], smtp: SmtpServer
) -> None:
    assert killed_job["state"]["type"] == "CANCELLED"
    assert "canceled-by:team-killer" in killed_job["tags"]
    job = _show(stack, killed_job["id"])
    assert (job["status"], job["canceled_by"]) == ("Canceled by the user", "team-killer")
    [mail] = smtp.inbox.wait_for("team@example.com", timeout=120)
    assert mail["X-Wsjobs-Job-Id"] == killed_job["id"]
    assert "Canceled by the user" in text_body(mail)
    assert (USER, PASSWORD) in smtp.inbox.logins


@pytest.mark.slow
def test_sync_brings_every_team_job_into_the_history(
    stack: Team,
    site_jobs: dict[str, dict[str, Any]],
    canceled_job: dict[str, Any],
    killed_job: dict[str, Any],
) -> None:
    history = stack.tmp / "history.ducklake"
    done = stack.cli("wsjobs", "sync", "--history", str(history), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    sql = stack.cli(
        "wsjobs", "sql", "--history", str(history), "--csv", "-c",
        "SELECT id, status, canceled_by FROM jobs ORDER BY id",
    )  # fmt: skip
    assert sql.returncode == 0, sql.stdout + sql.stderr
    rows = [line.split(",") for line in sql.stdout.strip().splitlines()[1:]]
    got = {row[0]: row[1] for row in rows}
    ours = {
        site_jobs["lyon"]["id"]: "Completed with errors",
        site_jobs["berlin"]["id"]: "Completed",
        canceled_job["id"]: "Canceled by the user",
        killed_job["id"]: "Canceled by the user",
    }
    assert {k: got.get(k) for k in ours} == ours, sql.stdout
    # The rest: runs the schedules of ``prefect deploy --all`` created ahead (Pending jobs).
    assert {v for k, v in got.items() if k not in ours} <= {"Pending"}, sql.stdout
