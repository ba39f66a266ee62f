"""The ``wsjobs`` command as a user runs it: a real process against the managed server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from workspaces_jobs import server

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server


def wsjobs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or dict(os.environ),
    )


@pytest.mark.parametrize(
    ("action", "code", "status"),
    [("ok", 0, "Completed"), ("broken", 1, "Error"), ("mixed", 2, "Completed with errors")],
)
def test_run_exit_codes_and_json(action: str, code: int, status: str) -> None:
    out = wsjobs("run", action, "--all", "--json", "--info", "cli test")
    assert out.returncode == code, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == status and data["url"].endswith(data["id"])


def test_show_json_shape_and_text() -> None:
    out = wsjobs("run", "mixed", "--devices", "t1,t3", "--json", "--owner", "bob")
    job_id = json.loads(out.stdout)["id"]
    shown = wsjobs("show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    for key in [
        "id",
        "action",
        "info",
        "owner",
        "status",
        "reason",
        "created",
        "started",
        "ended",
        "progress",
        "devices",
        "steps",
        "logs",
    ]:
        assert key in data
    assert data["owner"] == "bob" and data["status"] == "Completed with errors"
    assert sorted(d["device"] for d in data["devices"]) == ["t1", "t3"]
    text = wsjobs("show", job_id)
    assert "Workspaces" in text.stdout and "Logs" in text.stdout and "check failed" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope", "--all"], "unknown action 'nope'"),
        (["run", "ok", "--devices", "zz9"], "unknown device 'zz9'"),
        (["run", "ok"], "no device selected"),
        (["run", "inject", "--all", "--param", "novalue"], "is not KEY=VALUE"),
        (["show", "not-a-uuid"], "is not a job id"),
        (["show", "00000000-0000-0000-0000-000000000000"], "no job 00000000"),
    ],
)
def test_bad_input_is_one_line_exit_4(args: list[str], message: str) -> None:
    out = wsjobs(*args)
    assert out.returncode == 4
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_second_command_reuses_the_managed_server() -> None:
    info = server.status()
    assert info is not None
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    first = wsjobs("server", "status", "--json", env=env)
    data = json.loads(first.stdout)
    assert data["running"] and data["pid"] == info.pid
    assert wsjobs("actions", "--json", env=env).returncode == 0
    out = wsjobs("run", "ok", "--devices", "t1", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert server.status() == info  # same pid and port: nothing new was started
    assert json.loads(wsjobs("server", "status", "--json", env=env).stdout)["pid"] == info.pid


def test_actions_and_devices_json() -> None:
    actions = json.loads(wsjobs("actions", "--json").stdout)
    assert {"ok", "mixed", "inject"} <= {a["name"] for a in actions}
    devices = json.loads(wsjobs("devices", "--json").stdout)
    assert [d["name"] for d in devices] == ["t1", "t2", "t3"]
