"""``prefect.yaml`` end to end: a real server, ``prefect deploy --all``, a process worker.

The module starts its own ``prefect server start`` (temporary ``PREFECT_HOME`` and SQLite
database, a free port) rather than the session server of ``conftest.py``: deploying
every-minute sync and watchdog schedules there would let them act on other tests' jobs.
It then does what an ops engineer does, as subprocesses of the real CLIs — create the
``workspaces`` process pool, deploy everything from the repository root, start a worker
(in another folder, so the pull step is what finds the code), run an action through the
``run-action`` deployment with parameters, cancel a job the nightly schedule created,
sync the history through the ``history-sync`` deployment — and checks the result in the
Prefect API, the DuckDB history and the Prefect UI (headless Chromium). Every process
is stopped by its process group at the end, the worker's flow-run processes included.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from proctree import free_port, start_logged, step_pids, stop_tree, wait_for
from webauth import CHROMIUM_ARGS

from workspaces_jobs.deploy import project_root

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts"
POOL = "workspaces"

#: Bounded waits, in seconds (the first server start runs all migrations; CI is slow).
SERVER_START = 240.0
JOB_WAIT = 180.0


@dataclass
class Stack:
    """The running server and worker, and how to talk to them."""

    port: int
    env: dict[str, str]
    tmp: Path
    server_log: Path
    worker_log: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a CLI of the venv (``prefect``, ``wsjobs``) against this server."""
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.api}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {d["name"]: d for d in self.post("/deployments/filter", {})}

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/flow_runs/{run_id}"))

    def run_deployment(self, name: str, *args: str) -> str:
        """``prefect deployment run NAME ...``; return the new flow run's id."""
        done = self.cli("prefect", "deployment", "run", name, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
        assert match, done.stdout
        return match.group(1)

    def wait_final(self, run_id: str, timeout: float = JOB_WAIT) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            run = self.flow_run(run_id)
            state = run.get("state") or {}
            return (
                run
                if state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                else None
            )

        try:
            return wait_for(f"flow run {run_id} to end", final, timeout)
        except AssertionError:
            tail = self.worker_log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"flow run {run_id} did not end; worker log:\n{tail}") from None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("deploy-e2e")
    port = free_port()
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "PREFECT_UI_"))
    }
    server_env = {
        **base,
        "PREFECT_HOME": str(tmp / "server"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }
    env = {
        **base,
        "PREFECT_HOME": str(tmp / "client"),  # CLI profiles: never the user's ~/.prefect
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_UI_URL": f"http://127.0.0.1:{port}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "WSJOBS_HOME": str(tmp / "wsjobs"),
        "WSJOBS_INVENTORY": str(DATA / "inventory.yaml"),
        "WSJOBS_ACTIONS": str(DATA / "actions"),
        "COLUMNS": "200",  # keep the CLIs' rich output on one line per fact
    }
    (tmp / "server").mkdir()
    stack = Stack(port, env, tmp, tmp / "server.log", tmp / "worker.log")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server = start_logged(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            log=stack.server_log,
            env=server_env,
        )
        procs.append(server)

        def healthy() -> bool | None:
            assert server.poll() is None, stack.server_log.read_text(errors="replace")[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{stack.api}/health", timeout=2).status_code == 200 or None
            return None

        wait_for("the Prefect server", healthy, SERVER_START)

        pool = stack.cli("prefect", "work-pool", "create", POOL, "--type", "process")
        assert pool.returncode == 0, pool.stdout + pool.stderr
        deploy = stack.cli("prefect", "--no-prompt", "deploy", "--all", timeout=300)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr

        workdir = tmp / "worker-cwd"  # not the repository: the pull step must find the code
        workdir.mkdir()
        worker = start_logged(
            [str(BIN / "prefect"), "worker", "start", "--pool", POOL],
            log=stack.worker_log,
            env=env,
            cwd=workdir,
        )
        procs.append(worker)
        yield stack
    finally:
        for proc in reversed(procs):  # the worker (and its flow runs) first, then the server
            stop_tree(proc)


def _declared() -> list[dict[str, Any]]:
    return list(yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"])


# --- no server needed -----------------------------------------------------------------------


def test_prefect_yaml_entrypoints_name_functions_that_take_its_parameters() -> None:
    for deployment in _declared():
        path, func = deployment["entrypoint"].split(":")
        tree = ast.parse((project_root() / path).read_text())
        defs = {
            node.name: node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        assert func in defs, f"{deployment['name']}: no function {func} in {path}"
        args = defs[func].args
        accepted = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
        extra = set(deployment.get("parameters") or {}) - accepted
        assert not extra, f"{deployment['name']}: {func} takes no {sorted(extra)}"
        assert deployment["work_pool"]["name"] == POOL


def test_project_root_is_where_the_entrypoints_are() -> None:
    # An editable install: the checkout root (a wheel install would give the package folder).
    assert project_root() == REPO
    assert (project_root() / "flows" / "sync.py").is_file()


# --- the real thing --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(stack: Stack) -> dict[str, dict[str, Any]]:
    return stack.deployments()


@pytest.mark.slow
def test_deploy_all_creates_every_deployment_with_its_schedule(
    deployed: dict[str, dict[str, Any]],
) -> None:
    declared = {d["name"]: d for d in _declared()}
    assert set(deployed) == set(declared)
    for name, spec in declared.items():
        got = deployed[name]
        assert got["work_pool_name"] == POOL
        assert got["pull_steps"] == [{"workspaces_jobs.deploy.set_project_directory": {}}]
        crons = [s["schedule"].get("cron") for s in got["schedules"]]
        intervals = [s["schedule"].get("interval") for s in got["schedules"]]
        want = spec.get("schedules") or []
        assert crons == [s.get("cron") for s in want], name
        assert intervals == [s.get("interval") for s in want], name
    assert deployed["history-sync"]["work_queue_name"] == "history"
    for name in ("history-sync", "watchdog"):
        assert deployed[name]["global_concurrency_limit"]["limit"] == 1
        assert deployed[name]["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        assert "workspaces" not in deployed[name]["tags"]  # maintenance is not a job


@pytest.fixture(scope="module")
def mixed_job(stack: Stack, deployed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The test action ``mixed`` on every test device, through ``run-action``."""
    run_id = stack.run_deployment(
        "script-action/run-action",
        "--param", "action=mixed",
        "--param", 'target=["all"]',
        "--param", "info=e2e: mixed through a worker",
        "--param", "owner=e2e-ops",
        "--tag", "action:mixed",
        "--tag", "owner:e2e-ops",
    )  # fmt: skip
    return stack.wait_final(run_id)


@pytest.fixture(scope="module")
def canceled_job(stack: Stack, deployed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A run the nightly schedule created (hours ahead), canceled with ``wsjobs cancel``."""
    nightly = deployed["demo-patch-nightly"]["id"]

    def scheduled() -> str | None:
        runs = stack.post(
            "/flow_runs/filter",
            {
                "flow_runs": {
                    "deployment_id": {"any_": [nightly]},
                    "state": {"type": {"any_": ["SCHEDULED"]}},
                },
                "sort": "EXPECTED_START_TIME_ASC",
                "limit": 1,
            },
        )
        return str(runs[0]["id"]) if runs else None

    run_id = wait_for("the scheduler to create a nightly run", scheduled, 120)
    done = stack.cli("wsjobs", "cancel", run_id, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)[0]["status"] == "Canceled by the user"
    return stack.flow_run(run_id)


@pytest.fixture(scope="module")
def history(stack: Stack, mixed_job: dict[str, Any], canceled_job: dict[str, Any]) -> Path:
    """Both jobs synced into a fresh history through the ``history-sync`` deployment."""
    path = stack.tmp / "history-e2e.ducklake"
    for _ in range(3):  # CANCEL_NEW: a scheduled sync running right now cancels ours
        run_id = stack.run_deployment("wsjobs-sync-history/history-sync", "--param", f"path={path}")
        run = stack.wait_final(run_id)
        if run["state"]["type"] != "CANCELLED":
            break
        time.sleep(5)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    return path


def _rows(path: Path, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    from workspaces_jobs.reporting.store import open_store

    with open_store(path, read_only=True) as con:
        return con.execute(sql, params).fetchall()


@pytest.mark.slow
def test_deployment_run_with_parameters_ends_completed_with_errors(
    mixed_job: dict[str, Any], deployed: dict[str, dict[str, Any]]
) -> None:
    assert mixed_job["state"]["type"] == "COMPLETED"
    assert mixed_job["state"]["name"] == "Completed with errors"
    assert mixed_job["deployment_id"] == deployed["run-action"]["id"]
    assert mixed_job["work_pool_name"] == POOL
    assert mixed_job["parameters"]["action"] == "mixed"
    assert {"workspaces", "action:mixed", "owner:e2e-ops"} <= set(mixed_job["tags"])


@pytest.mark.slow
def test_deployment_run_lands_in_the_history_with_devices_and_logs(
    history: Path, mixed_job: dict[str, Any]
) -> None:
    job_id = mixed_job["id"]
    [(action, owner, info, status, deployment_id)] = _rows(
        history,
        "SELECT action, owner, info, status, deployment_id FROM jobs WHERE id = ?",
        [job_id],
    )
    assert (action, owner, info, status) == (
        "mixed",
        "e2e-ops",
        "e2e: mixed through a worker",
        "Completed with errors",
    )
    assert deployment_id == mixed_job["deployment_id"]
    devices = _rows(
        history,
        "SELECT device, status FROM job_devices WHERE job_id = ? ORDER BY device",
        [job_id],
    )
    assert devices == [
        ("t1", "Completed"),
        ("t2", "Completed"),
        ("t3", "Completed with errors"),
    ]
    lines = _rows(
        history,
        "SELECT device, step, stream, message FROM logs WHERE job_id = ? AND device IS NOT NULL",
        [job_id],
    )
    assert ("t3", "check", "err", "check failed") in lines
    assert ("t1", "finish", "out", "finished") in lines


@pytest.mark.slow
def test_scheduled_job_canceled_while_pending_shows_canceled_by_the_user(
    history: Path, canceled_job: dict[str, Any], stack: Stack
) -> None:
    assert canceled_job["state"]["type"] == "CANCELLED"
    assert canceled_job["run_count"] == 0  # it never ran
    canceler = next(t for t in canceled_job["tags"] if t.startswith("canceled-by:"))
    by = canceler.removeprefix("canceled-by:")
    shown = stack.cli("wsjobs", "show", canceled_job["id"], "--json", "--no-logs")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "Canceled by the user"
    [(action, owner, status, canceled_by)] = _rows(
        history,
        "SELECT action, owner, status, canceled_by FROM jobs WHERE id = ?",
        [canceled_job["id"]],
    )
    assert (action, owner, status, canceled_by) == (
        "demo-patch",
        "scheduler",
        "Canceled by the user",
        by,
    )


@pytest.mark.slow
def test_prefect_ui_shows_the_job_state_and_its_progress_artifact(
    stack: Stack, mixed_job: dict[str, Any]
) -> None:
    from playwright.sync_api import sync_playwright

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium (./scripts/test does)")
    job_id = mixed_job["id"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "prefect-ui-flow-run.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{stack.ui}/runs/flow-run/{job_id}")
            page.get_by_text("Completed with errors", exact=True).first.wait_for()
            page.get_by_text("check[t3]").first.wait_for()  # the step on the timeline
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text(f"job-progress-{job_id}").last.wait_for()
            page.get_by_text(re.compile(r"\b9 of 9\b")).first.wait_for()  # progress: all steps
            page.screenshot(path=str(shot))
            text = page.locator("body").inner_text()
        finally:
            browser.close()
    assert "Can't connect to Server API" not in text
    assert "Completed with errors" in text
    assert "PROGRESS" in text.upper()
    assert shot.stat().st_size > 10_000
    UUID(job_id)  # the page we looked at is the job's own


@pytest.mark.slow
def test_wsjobs_kill_stops_a_worker_run_and_its_step_processes(
    stack: Stack, deployed: dict[str, dict[str, Any]]
) -> None:
    run_id = stack.run_deployment(
        "script-action/run-action",
        "--param", "action=slow",
        "--param", 'target=["t1"]',
        "--param", 'params={"seconds": "120"}',
        "--param", "owner=e2e-ops",
        "--tag", "action:slow",
        "--tag", "owner:e2e-ops",
    )  # fmt: skip
    wait_for("the step to start", lambda: step_pids(run_id) or None, JOB_WAIT)
    done = stack.cli("wsjobs", "kill", run_id, "--by", "e2e-killer", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    run = stack.wait_final(run_id, timeout=60)
    assert run["state"]["type"] == "CANCELLED"
    assert "canceled-by:e2e-killer" in run["tags"]
    wait_for("the step's processes to end", lambda: not step_pids(run_id) or None, 30)
    shown = stack.cli("wsjobs", "show", run_id, "--json")
    job = json.loads(shown.stdout)
    assert job["status"] == "Canceled by the user"
    assert job["canceled_by"] == "e2e-killer"
