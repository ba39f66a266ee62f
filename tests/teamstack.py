"""The team setup of docs/operations.md ("Running for real"), started for a test or a benchmark.

A real PostgreSQL (tests/pgserver.py), ``prefect server start`` on it (127.0.0.1, a free
port, basic-auth credentials), the ``workspaces`` process pool with one queue per site,
``prefect deploy --all`` plus one ``run-action-<site>`` deployment per site, and one
``wsjobs worker`` per (name, site). The commands are :data:`RECIPE`, the same lines
docs/operations.md shows (``tests/test_team.py`` checks that they are there, verbatim); only the
values in ``$VARIABLES`` differ (ports, passwords, folders).

Every process is started in its own session and stopped by process group at the end,
the workers' flow-run processes included; PostgreSQL is stopped and its folder removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pgserver import USER, Postgres, postgres_server
from proctree import free_port, start_logged, stop_tree, wait_for

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "workspaces"
#: Two sites: two queues of the one pool (three workers by default: two in lyon).
SITES = ("lyon", "berlin")
WORKERS = (("lyon-1", "lyon"), ("lyon-2", "lyon"), ("berlin-1", "berlin"))

#: The documented recipe, as run here (``$X`` is expanded from the environment given).
RECIPE = {
    "server": "prefect server start",
    "pool": "prefect work-pool create workspaces --type process",
    "queue": "prefect work-queue create $SITE --pool workspaces",
    "deploy": "prefect --no-prompt deploy --all",
    "site": (
        "prefect --no-prompt deploy flows/script_action.py:script_action"
        " --name run-action-$SITE --pool workspaces --work-queue $SITE"
    ),
    "worker": "WSJOBS_WORK_QUEUE=$SITE wsjobs worker --name $NAME",
}

#: Server environment of the documented recipe (values are this stack's).
SERVER_VARS = (
    "PREFECT_SERVER_DATABASE_DRIVER",
    "PREFECT_SERVER_DATABASE_HOST",
    "PREFECT_SERVER_DATABASE_PORT",
    "PREFECT_SERVER_DATABASE_USER",
    "PREFECT_SERVER_DATABASE_NAME",
    "PREFECT_SERVER_DATABASE_PASSWORD",
    "PREFECT_SERVER_API_HOST",
    "PREFECT_SERVER_API_PORT",
    "PREFECT_UI_API_URL",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_SERVER_API_AUTH_STRING",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW",
)
#: The server's connection pool to PostgreSQL (Prefect's default, 5 + 10 overflow, ran out
#: under a 2,000-device job: HTTP 500 "QueuePool limit of size 5 overflow 10 reached").
#: 20 + 40 stays under PostgreSQL's default ``max_connections`` (100).
POOL_SIZE, MAX_OVERFLOW = "20", "40"

SERVER_START = 300.0


@dataclass
class Team:
    """The running team setup and how to talk to it."""

    pg: Postgres
    port: int
    auth: str
    env: dict[str, str]
    tmp: Path
    server: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def http(self) -> httpx.Client:
        user, password = self.auth.split(":", 1)
        return httpx.Client(base_url=self.api, auth=(user, password), timeout=60)

    def get(self, path: str) -> Any:
        with self.http() as c:
            r = c.get(path)
            r.raise_for_status()
            return r.json()

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        with self.http() as c:
            r = c.post(path, json=dict(body))
            r.raise_for_status()
            return r.json()

    def sh(
        self, line: str, *, timeout: float = 300.0, **values: str
    ) -> subprocess.CompletedProcess[str]:
        """Run one recipe line (``$X`` from ``values``) from the checkout, the venv's tools
        first on the PATH; fail with its output when it fails."""
        env = {**self.env, **values, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        done = subprocess.run(
            ["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        return done

    def cli(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]], cwd=REPO, env=self.env, capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def start_worker(self, name: str, site: str) -> subprocess.Popen[bytes]:
        env = {**self.env, "SITE": site, "NAME": name, "PATH": f"{BIN}:{os.environ['PATH']}"}
        workdir = self.tmp / f"cwd-{name}"  # not the checkout: the pull step finds the code
        workdir.mkdir(exist_ok=True)
        proc = start_logged(
            ["bash", "-c", f"exec env {RECIPE['worker']}"],
            log=self.log(name),
            env=env,
            cwd=workdir,
        )
        self.workers[name] = proc
        return proc

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/flow_runs/{run_id}"))

    def run_deployment(
        self,
        site: str,
        parameters: Mapping[str, Any],
        tags: Sequence[str] = (),
        job_variables: Mapping[str, Any] | None = None,
    ) -> str:
        """A job through the site's ``run-action-<site>`` deployment; its flow run id."""
        [dep] = self.post(
            "/deployments/filter", {"deployments": {"name": {"any_": [f"run-action-{site}"]}}}
        )
        run = self.post(
            f"/deployments/{dep['id']}/create_flow_run",
            {
                "parameters": dict(parameters),
                "tags": list(tags),
                "job_variables": dict(job_variables or {}),
            },
        )
        return str(run["id"])

    def wait_final(self, run_id: str, timeout: float = 300.0) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            try:
                run = self.flow_run(run_id)
            except httpx.HTTPError:  # a loaded server may answer 500 once: look again
                return None
            kind = (run.get("state") or {}).get("type")
            return run if kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        try:
            return wait_for(f"flow run {run_id} to end", final, timeout)
        except AssertionError:
            tails = "\n".join(
                f"--- {n}\n{self.log(n).read_text(errors='replace')[-2000:]}" for n in self.workers
            )
            raise AssertionError(f"flow run {run_id} did not end:\n{tails}") from None


@contextlib.contextmanager
def team(
    tmp: Path,
    *,
    workers: Sequence[tuple[str, str]] = WORKERS,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Team]:
    """The whole stack of the documented recipe; everything stopped at the end."""
    tmp.mkdir(parents=True, exist_ok=True)
    with postgres_server("prefect") as pg:
        port = free_port()
        auth = f"admin:{secrets.token_urlsafe(12)}"
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_API_", "PREFECT_UI_", "PREFECT_SERVER_"))
        }
        server_env = {
            **base,
            "PREFECT_HOME": str(tmp / "server-home"),
            "PREFECT_SERVER_DATABASE_DRIVER": "postgresql+asyncpg",
            "PREFECT_SERVER_DATABASE_HOST": "127.0.0.1",
            "PREFECT_SERVER_DATABASE_PORT": str(pg.port),
            "PREFECT_SERVER_DATABASE_USER": USER,
            "PREFECT_SERVER_DATABASE_NAME": pg.database,
            "PREFECT_SERVER_DATABASE_PASSWORD": "unused-trust-auth",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_AUTH_STRING": auth,
            "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": POOL_SIZE,
            "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": MAX_OVERFLOW,
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        }
        env = {
            **base,
            "PREFECT_HOME": str(tmp / "client-home"),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_API_AUTH_STRING": auth,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
            "WSJOBS_HOME": str(tmp / "wsjobs-home"),
            "COLUMNS": "200",
            **(extra_env or {}),
        }
        stack = Team(pg, port, auth, env, tmp)
        try:
            (tmp / "server-home").mkdir(exist_ok=True)
            stack.server = start_logged(
                [str(BIN / "prefect"), "server", "start"],
                log=stack.log("server"),
                env=server_env,
                cwd=tmp,
            )
            server = stack.server

            def healthy() -> bool | None:
                assert server.poll() is None, stack.log("server").read_text(errors="replace")
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"{stack.api}/health", timeout=2).status_code == 200 or None
                return None

            wait_for("the Prefect server on PostgreSQL", healthy, SERVER_START)
            stack.sh(RECIPE["pool"])
            for site in sorted({s for _, s in workers}):
                stack.sh(RECIPE["queue"], SITE=site)
            stack.sh(RECIPE["deploy"])
            for site in sorted({s for _, s in workers}):
                stack.sh(RECIPE["site"], SITE=site)
            for name, site in workers:
                stack.start_worker(name, site)
            yield stack
        finally:
            for proc in stack.workers.values():
                stop_tree(proc)
            if stack.server is not None:
                stop_tree(stack.server)
