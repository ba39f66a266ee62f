"""The team setup end to end: PostgreSQL, a Prefect server on it, three workers, two sites.

One module-scoped stack (tests/teamstack.py runs the "Running for real" recipe of docs/operations.md
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
import os
import shutil
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from proctree import children, kill_pids, kill_tree, step_pids, wait_for
from smtpserver import PASSWORD, USER, SmtpServer, free_port, text_body
from teamstack import POOL, RECIPE, REPO, SERVER_VARS, SITES, Team, team

DATA = Path(__file__).parent / "data"
JOB_TAGS = ["workspaces", "owner:team-ops"]


def test_documented_team_recipe_is_the_one_the_test_runs() -> None:
    recipe = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    for name, line in RECIPE.items():
        spelled = line in recipe or all(line.replace("$SITE", s) in recipe for s in SITES)
        assert spelled, f"docs/operations.md's team recipe lacks the {name} line: {line}"
    for var in SERVER_VARS:
        assert f"{var}=" in recipe, f"docs/operations.md's team recipe does not set {var}"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port()).start()
    try:
        yield server
    finally:
        server.stop()


#: The fleet a spread job runs on: more devices than WSJOBS_SPREAD_OVER, shards of three.
FLEET = [f"f{n:02d}" for n in range(1, 10)]
SPREAD = {"WSJOBS_SPREAD_OVER": "4", "WSJOBS_SHARD_SIZE": "3"}
#: A non-critical failure on f02, a critical one on f05 (its later steps are skipped).
SPREAD_MIXED = """name: spread-mixed
description: Mixed results over the fleet (tests/test_team.py).
steps:
  - name: prepare
    script: |
      if [ "$WSJOBS_DEVICE" = f05 ]; then echo "prepare failed" >&2; exit 2; fi
      echo "prepared $WSJOBS_DEVICE"
  - name: check
    critical: false
    script: |
      if [ "$WSJOBS_DEVICE" = f02 ]; then echo "check failed" >&2; exit 3; fi
      echo fine
  - name: finish
    script: echo "finished $WSJOBS_DEVICE"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp("team")
    actions = tmp / "actions"
    shutil.copytree(DATA / "actions", actions)
    (actions / "spread-mixed.yaml").write_text(SPREAD_MIXED)
    inventory = tmp / "inventory.yaml"
    inventory.write_text(
        (DATA / "inventory.yaml").read_text()
        + "".join(f"  - {{name: {n}, transport: local, tags: [fleet]}}\n" for n in FLEET)
    )
    extra = {
        "WSJOBS_INVENTORY": str(inventory),
        "WSJOBS_ACTIONS": str(actions),
        "WSJOBS_COMPANIONS": "",
        "WSJOBS_SMTP_HOST": "127.0.0.1",
        "WSJOBS_SMTP_PORT": str(smtp.port),
        "WSJOBS_SMTP_USER": USER,
        "WSJOBS_SMTP_PASSWORD": PASSWORD,
        "WSJOBS_SMTP_FROM": "jobs@example.com",
        "WSJOBS_SMTP_TIMEOUT": "5",
        # Shards send a heartbeat every 30 s (Prefect's minimum): one lost with its worker
        # is noticed after 75 s.
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        **SPREAD,
    }
    with team(tmp / "stack", extra_env=extra) as running:
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
        "lyon": _job(stack, "lyon", "mixed", ["t1", "t2", "t3"]),  # not spread: 3 <= 4
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


@pytest.fixture(scope="module")
def killed_job(stack: Team, smtp: SmtpServer) -> dict[str, Any]:
    """A running job on a berlin worker, subscribed to by email, then killed."""
    job_id = _job(stack, "berlin", "slow", ["t1"], seconds="300")
    wait_for("the step to start", lambda: step_pids(job_id) or None, 240)
    sub = stack.cli("wsjobs", "notify", job_id, "--email", "team@example.com")
    assert sub.returncode == 0, sub.stdout + sub.stderr
    done = stack.cli("wsjobs", "kill", job_id, "--by", "team-killer", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    run = stack.wait_final(job_id, timeout=180)
    wait_for("the step's processes to end", lambda: not step_pids(job_id) or None, 60)
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


# --- one job across many workers (flows/spread.py) -------------------------------------------


def _shards(stack: Team, job_id: str) -> list[dict[str, Any]]:
    return list(
        stack.post(
            "/flow_runs/filter",
            {"flow_runs": {"tags": {"all_": [f"shard-of:{job_id}"]}}, "sort": "NAME_ASC"},
        )
    )


@pytest.fixture(scope="module")
def spread_job(stack: Team) -> dict[str, Any]:
    """``spread-mixed`` on the nine fleet devices: more than WSJOBS_SPREAD_OVER (4), so
    three shards of three; f02 fails a non-critical step, f05 a critical one."""
    return stack.wait_final(_job(stack, "lyon", "spread-mixed", ["tag:fleet"]))


@pytest.mark.slow
def test_spread_job_is_one_job_with_one_status_progress_and_views(
    stack: Team, spread_job: dict[str, Any]
) -> None:
    assert (spread_job["state"]["type"], spread_job["state"]["name"]) == (
        "COMPLETED",
        "Completed with errors",
    )
    shards = _shards(stack, spread_job["id"])
    assert len(shards) == 3
    assert sorted(len(s["parameters"]["target"]) for s in shards) == [3, 3, 3]
    assert sorted(d for s in shards for d in s["parameters"]["target"]) == FLEET
    for shard in shards:
        assert shard["tags"] == [f"shard-of:{spread_job['id']}"]  # no job tag: not a job
        assert shard["state"]["type"] == "COMPLETED"
        assert shard["work_queue_name"] == "lyon"
    job = _show(stack, spread_job["id"])
    assert job["status"] == "Completed with errors"
    assert job["progress"] == 100.0
    devices = {d["device"]: d["status"] for d in job["devices"]}
    assert devices == {
        **{name: "Completed" for name in FLEET},
        "f02": "Completed with errors",
        "f05": "Error",
    }
    assert {s["job_id"] for s in job["steps"]} == {spread_job["id"]}
    assert len(job["steps"]) == 9 * 3 - 2  # f05 stopped at its critical step
    lines = {(g["device"], g["step"], g["stream"], g["message"]) for g in job["logs"]}
    assert ("f09", "finish", "out", "finished f09") in lines
    assert ("f05", "prepare", "err", "prepare failed") in lines
    assert {g["job_id"] for g in job["logs"]} == {spread_job["id"]}
    listed = stack.cli("wsjobs", "logs", spread_job["id"])
    assert listed.returncode == 0 and "finished f07" in listed.stdout, listed.stderr


def _pid(run: dict[str, Any]) -> int:
    """The flow run's process (a process worker records ``host:pid``)."""
    return int(str(run["infrastructure_pid"]).rsplit(":", 1)[-1])


def _holder(stack: Team, run: dict[str, Any]) -> str:
    """The worker whose process tree runs this flow run."""
    pid = _pid(run)
    return next(n for n, proc in stack.workers.items() if pid in children(proc.pid))


@pytest.fixture(scope="module")
def lost_shard_job(stack: Team) -> Iterator[tuple[dict[str, Any], str]]:
    """A spread job whose shard goes silent mid-step; yields the job as it ended and the
    shard. When the shard's worker does not also run the job, that worker dies with all
    its processes (SIGKILL: the host went down); else the shard's processes freeze
    (SIGSTOP: the host hangs) so the job's own process lives on. Either way the shard
    sends no heartbeat any more and nobody but the job can notice."""
    job_id = _job(stack, "lyon", "slow", ["tag:fleet"], seconds="45")

    def all_running() -> list[dict[str, Any]] | None:
        shards = _shards(stack, job_id)
        ok = len(shards) == 3 and all(
            s["state"]["type"] == "RUNNING" and s.get("infrastructure_pid") and step_pids(s["id"])
            for s in shards
        )
        return shards if ok else None

    # Which worker takes which shard is the pool's choice (one worker may take all three):
    # lose exactly one shard either way, so the expected outcome is always the same.
    shards = wait_for("every shard's steps to start", all_running, 300)
    parent = wait_for(
        "the job's process", lambda: stack.flow_run(job_id) if _parent_pid(stack, job_id) else None,
        60,
    )  # fmt: skip
    holders = {s["id"]: _holder(stack, s) for s in shards}
    job_holder = _holder(stack, parent)
    alone = [
        s
        for s in shards
        if holders[s["id"]] != job_holder and list(holders.values()).count(holders[s["id"]]) == 1
    ]
    frozen: list[int] = []
    if alone:  # its worker runs nothing else of this job: the host goes down
        shard = alone[0]
        holder = holders[shard["id"]]
        kill_tree(stack.workers[holder])
        kill_pids(step_pids(shard["id"]))
        stack.start_worker(holder, "lyon")  # the host comes back for the tests after
    else:  # the host hangs: only this shard's processes freeze
        shard = shards[0]
        frozen = [_pid(shard), *children(_pid(shard))]
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
    try:
        yield stack.wait_final(job_id, timeout=400), shard["id"]
    finally:
        kill_pids(frozen)


def _parent_pid(stack: Team, job_id: str) -> bool:
    return bool(stack.flow_run(job_id).get("infrastructure_pid"))


@pytest.mark.slow
def test_worker_killed_mid_shard_makes_its_devices_error_and_the_job_completed_with_errors(
    stack: Team, lost_shard_job: tuple[dict[str, Any], str]
) -> None:
    job, lost = lost_shard_job
    assert (job["state"]["type"], job["state"]["name"]) == ("COMPLETED", "Completed with errors")
    shards = {s["id"]: s for s in _shards(stack, job["id"])}
    assert shards[lost]["state"]["type"] == "CRASHED"
    assert "shard lost: no heartbeat" in shards[lost]["state"]["message"]
    others = [s for i, s in shards.items() if i != lost]
    assert [s["state"]["type"] for s in others] == ["COMPLETED", "COMPLETED"]
    shown = _show(stack, job["id"])
    devices = {d["device"]: d["status"] for d in shown["devices"]}
    for name in shards[lost]["parameters"]["target"]:
        assert devices[name] == "Error", devices
    for shard in others:
        for name in shard["parameters"]["target"]:
            assert devices[name] == "Completed", devices


@pytest.fixture(scope="module")
def killed_spread_job(stack: Team) -> dict[str, Any]:
    """A spread job killed with ``wsjobs kill`` while its shards run."""
    job_id = _job(stack, "lyon", "slow", ["tag:fleet"], seconds="300")

    def all_running() -> bool | None:
        shards = _shards(stack, job_id)
        ok = len(shards) == 3 and all(step_pids(s["id"]) for s in shards)
        return True if ok else None

    wait_for("every shard's steps to start", all_running, 300)
    done = stack.cli("wsjobs", "kill", job_id, "--by", "spread-killer", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return stack.wait_final(job_id, timeout=240)


@pytest.mark.slow
def test_kill_of_a_spread_job_reaches_every_shard(
    stack: Team, killed_spread_job: dict[str, Any]
) -> None:
    assert killed_spread_job["state"]["type"] == "CANCELLED"
    shards = _shards(stack, killed_spread_job["id"])
    for shard in shards:
        wait_for(
            f"shard {shard['id']} to stop",
            lambda s=shard: stack.flow_run(s["id"])["state"]["type"] == "CANCELLED" or None,
            120,
        )
        wait_for("its step processes to end", lambda s=shard: not step_pids(s["id"]) or None, 60)
    job = _show(stack, killed_spread_job["id"])
    assert (job["status"], job["canceled_by"]) == ("Canceled by the user", "spread-killer")


@pytest.fixture(scope="module")
def canceled_spread_job(stack: Team) -> dict[str, Any]:
    """A spread job canceled while Pending: the berlin queue takes one run at a time, so
    its worker runs the job's process and no shard can start. Returns the job as it was
    seen Pending (``pending``), as it ended (``run``) and its shards (``shards``)."""
    queue = f"/work_pools/{POOL}/queues/berlin"

    def limit(value: int | None) -> None:
        with stack.http() as c:
            c.patch(queue, json={"concurrency_limit": value}).raise_for_status()

    limit(1)
    try:
        job_id = _job(stack, "berlin", "slow", ["tag:fleet"], seconds="300")

        def waiting() -> dict[str, Any] | None:
            run = stack.flow_run(job_id)
            ready = (run.get("state") or {}).get("name") == "Waiting for workers"
            return run if ready and len(_shards(stack, job_id)) == 3 else None

        wait_for("the job to wait for workers with three shards", waiting, 300)
        pending = _show(stack, job_id)
        done = stack.cli("wsjobs", "cancel", job_id, "--by", "spread-canceler", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        run = stack.wait_final(job_id, timeout=240)
    finally:
        limit(None)
    return {"pending": pending, "run": run, "shards": _shards(stack, job_id)}


@pytest.mark.slow
def test_cancel_of_a_pending_spread_job_cancels_it_and_every_shard(
    stack: Team, canceled_spread_job: dict[str, Any]
) -> None:
    pending, run = canceled_spread_job["pending"], canceled_spread_job["run"]
    assert pending["status"] == "Pending"
    assert {d["status"] for d in pending["devices"]} <= {"Pending"}
    assert run["state"]["type"] == "CANCELLED"
    assert "canceled-by:spread-canceler" in run["tags"]
    shards = canceled_spread_job["shards"]
    assert len(shards) == 3
    for shard in shards:
        assert (shard["state"]["type"], shard["run_count"]) == ("CANCELLED", 0), shard
        assert "spread-canceler while Pending" in shard["state"]["message"], shard
    job = _show(stack, run["id"])
    assert (job["status"], job["canceled_by"]) == ("Canceled by the user", "spread-canceler")
    assert not job["steps"]  # no device ran a step
    assert any("while Pending (waiting for workers)" in g["message"] for g in job["logs"])


@pytest.mark.slow
def test_sync_stores_a_spread_job_as_one_job(
    stack: Team, spread_job: dict[str, Any], killed_spread_job: dict[str, Any]
) -> None:
    history = stack.tmp / "history-spread.ducklake"
    done = stack.cli("wsjobs", "sync", "--history", str(history), "--json")
    assert done.returncode == 0, done.stdout + done.stderr

    def query(sql: str) -> list[list[str]]:
        out = stack.cli("wsjobs", "sql", "--history", str(history), "--csv", "-c", sql)
        assert out.returncode == 0, out.stdout + out.stderr
        return [line.split(",") for line in out.stdout.strip().splitlines()[1:]]

    job_id = spread_job["id"]
    assert query(f"SELECT status FROM jobs WHERE id = '{job_id}'") == [["Completed with errors"]]
    devices = dict(
        map(tuple, query(f"SELECT device, status FROM job_devices WHERE job_id = '{job_id}'"))
    )  # type: ignore[arg-type]  # noqa: E501
    assert devices == {
        **{name: "Completed" for name in FLEET},
        "f02": "Completed with errors",
        "f05": "Error",
    }
    assert query(f"SELECT count(*) FROM steps WHERE job_id = '{job_id}'") == [["25"]]
    assert query(
        f"SELECT count(*) FROM logs WHERE job_id = '{job_id}' AND message = 'finished f09'"
    ) == [["1"]]
    shards = [s["id"] for s in _shards(stack, job_id) + _shards(stack, killed_spread_job["id"])]
    listed = {row[0] for row in query("SELECT id FROM jobs")}
    assert not listed & set(shards)  # a shard is never a job of its own
    killed = query(f"SELECT status, canceled_by FROM jobs WHERE id = '{killed_spread_job['id']}'")
    assert killed == [["Canceled by the user", "spread-killer"]]
