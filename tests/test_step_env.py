"""What a step's script sees, and what its output may carry: an explicit environment and
secrets masked at the source.

A real job (real executor, real API) runs a step that prints its whole environment and
echoes secrets, while the executor's own environment holds credentials. The step must
see only the documented allowlist, its parameters, the job context and what the action
and the device declare; every secret value must be ``***`` in the job's log lines, in
``wsjobs show``, in the history, in a CSV export and in the email.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from smtpserver import PASSWORD, USER, SmtpServer, free_port, text_body

from workspaces_jobs import stepenv
from workspaces_jobs.catalog import CatalogError, load_actions, load_inventory
from workspaces_jobs.jobs import read_job, submit_job, wait_job
from workspaces_jobs.notify import subscribe
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.sync import sync_history
from workspaces_jobs.tasks.lines import MASK, Masker, process_secrets

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server

SECRET_PARAM = "param-secret-Value-42"
BLOCK_VALUE = "block-secret-" + uuid.uuid4().hex
CREDENTIALS = {
    "WSJOBS_SMTP_PASSWORD": PASSWORD,
    "PREFECT_API_KEY": "pnu_test-api-key-" + uuid.uuid4().hex[:8],
    "AWS_SECRET_ACCESS_KEY": "aws-secret-" + uuid.uuid4().hex[:8],
    "SSH_AUTH_SOCK": "/tmp/agent-" + uuid.uuid4().hex[:8],
    "UNRELATED_VAR": "not-for-steps",
    "SITE_REGION": "eu-west-7",
    "LC_TIME": "C.UTF-8",
}
ACTION = """
name: env-probe
description: Prints the step's environment and echoes secrets.
params:
  token: {required: true, secret: true}
  plain: {default: visible-value}
env:
  pass: [SITE_REGION]
  set: {ACTION_VAR: from-action}
  secrets: {BLOCK_TOKEN: SECRET_BLOCK_NAME}
steps:
  - name: probe
    script: |
      env | cut -d= -f1 | sort | sed 's/^/name=/'
      echo "token=$PARAM_TOKEN plain=$PARAM_PLAIN"
      n=$(printf %s "$BLOCK_TOKEN" | wc -c)
      echo "smtp=$WSJOBS_SMTP_PASSWORD block=$BLOCK_TOKEN blocklen=$n"
      echo "device_var=$DEVICE_VAR action_var=$ACTION_VAR region=$SITE_REGION"
      echo "again: {{ params.token }} and {{ params.plain }}"
"""
INVENTORY = """
devices:
  - name: e1
    transport: local
    env: {set: {DEVICE_VAR: from-device}}
"""
#: Names a shell adds by itself.
SHELL_NAMES = {"PWD", "SHLVL", "_", "OLDPWD"}


@dataclass
class EnvJob:
    id: str
    tmp: Path
    email: str
    smtp: SmtpServer
    env: dict[str, str]


@pytest.fixture(scope="module")
def env_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvJob]:
    tmp = tmp_path_factory.mktemp("stepenv")
    block = "wsjobs-test-" + uuid.uuid4().hex[:8]
    Secret(value=BLOCK_VALUE).save(block)
    (tmp / "actions").mkdir()
    (tmp / "actions" / "env-probe.yaml").write_text(ACTION.replace("SECRET_BLOCK_NAME", block))
    (tmp / "inventory.yaml").write_text(INVENTORY)
    smtp = SmtpServer(free_port()).start()
    patch = pytest.MonkeyPatch()
    values = {
        **CREDENTIALS,
        "WSJOBS_INVENTORY": str(tmp / "inventory.yaml"),
        "WSJOBS_ACTIONS": str(tmp / "actions"),
        "WSJOBS_SMTP_HOST": "127.0.0.1",
        "WSJOBS_SMTP_PORT": str(smtp.port),
        "WSJOBS_SMTP_USER": USER,
        "WSJOBS_SMTP_FROM": "jobs@example.com",
        "WSJOBS_SMTP_TIMEOUT": "5",
    }
    for key, value in values.items():
        patch.setenv(key, value)
    try:
        job_id = submit_job("env-probe", target=["e1"], params={"token": SECRET_PARAM})
        assert wait_job(job_id, timeout=120).value == "Completed"
        yield EnvJob(job_id, tmp, f"env-{uuid.uuid4().hex[:8]}@example.com", smtp, dict(os.environ))
    finally:
        patch.undo()
        smtp.stop()


def _out_lines(job_id: str) -> list[str]:
    lines: list[str] = []
    for _ in range(40):
        job = read_job(job_id)
        lines = [line.message for line in job.logs if line.stream in ("out", "err")]
        if any(m.startswith("again: ") for m in lines):
            return lines
        time.sleep(0.3)
    raise AssertionError(f"step lines never arrived: {lines}")


def _secrets() -> list[str]:
    return [SECRET_PARAM, BLOCK_VALUE, PASSWORD, CREDENTIALS["PREFECT_API_KEY"]] + [
        v for v in process_secrets() if len(v) >= 4
    ]


def test_step_sees_only_the_allowlist_and_declared_variables(env_job: EnvJob) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for key in ("WSJOBS_INVENTORY", "WSJOBS_ACTIONS"):
            mp.setenv(key, env_job.env[key])
        lines = _out_lines(env_job.id)
    names = {m.removeprefix("name=") for m in lines if m.startswith("name=")}
    allowed = (
        set(stepenv.BASE_NAMES)
        | SHELL_NAMES
        | {"PARAM_TOKEN", "PARAM_PLAIN", "ACTION_VAR", "DEVICE_VAR", "SITE_REGION"}
        | {"BLOCK_TOKEN", "WSJOBS_JOB_ID", "WSJOBS_DEVICE", "WSJOBS_STEP", "WSJOBS_DEVICE_TAGS"}
    )
    assert {n for n in names if not n.startswith("LC_")} <= allowed, names - allowed
    assert "LC_TIME" in names and "PATH" in names  # the basics still arrive
    for leaked in ("WSJOBS_SMTP_PASSWORD", "PREFECT_API_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert leaked not in names
    assert "SSH_AUTH_SOCK" not in names and "UNRELATED_VAR" not in names
    assert not any(n.startswith("PREFECT_") for n in names)
    assert "device_var=from-device action_var=from-action region=eu-west-7" in lines
    assert f"smtp= block={MASK} blocklen={len(BLOCK_VALUE)}" in lines  # got it, masked


def test_secrets_are_masked_in_lines_show_history_export_and_email(env_job: EnvJob) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for key in ("WSJOBS_INVENTORY", "WSJOBS_ACTIONS", "WSJOBS_SMTP_HOST", "WSJOBS_SMTP_PORT"):
            mp.setenv(key, env_job.env[key])
        for key in ("WSJOBS_SMTP_USER", "WSJOBS_SMTP_FROM", "WSJOBS_SMTP_TIMEOUT"):
            mp.setenv(key, env_job.env[key])
        mp.setenv("WSJOBS_SMTP_PASSWORD", PASSWORD)
        lines = _out_lines(env_job.id)
        assert f"token={MASK} plain=visible-value" in lines
        assert f"again: {MASK} and visible-value" in lines
        shown = subprocess.run(
            [sys.executable, "-m", "workspaces_jobs.cli", "show", env_job.id, "--json"],
            capture_output=True, text=True, timeout=120, env=dict(os.environ),
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        assert data["parameters"]["params"] == {"token": MASK, "plain": "visible-value"}
        history = env_job.tmp / "history.duckdb"
        sync_history(history, full=True)
        out = env_job.tmp / "jobs.csv"
        export = subprocess.run(
            [
                sys.executable, "-m", "workspaces_jobs.cli", "export", "--no-sync", "--history",
                str(history), "--age", "all", "--out", str(out), "--with-logs",
                "--columns", "id,info,parameters",
            ],
            capture_output=True, text=True, timeout=120, env=dict(os.environ),
        )  # fmt: skip
        subscribe(env_job.id, [env_job.email], now=True)
        [mail] = env_job.smtp.inbox.wait_for(env_job.email, 1, timeout=60)
    with open_store(history, read_only=True) as con:
        stored = con.execute(
            "SELECT string_agg(message, '\n') FROM logs WHERE job_id = $id", {"id": env_job.id}
        ).fetchone()
        params = con.execute("SELECT parameters FROM jobs WHERE id = $id", {"id": env_job.id})
        stored_params = params.fetchone()
    assert stored and stored_params and "token=***" in stored[0]
    assert export.returncode == 0, export.stderr
    texts = {
        "show": shown.stdout,
        "history logs": stored[0],
        "history parameters": stored_params[0],
        "export": out.read_text() + (env_job.tmp / "jobs.logs.csv").read_text(),
        "email": text_body(mail),
    }
    for where, text in texts.items():
        for secret in _secrets():
            assert secret not in text, f"{where} holds a secret"


def test_masker_rules() -> None:
    mask = Masker(["s3cr3t", "s3cr3t-longer", "ab", None, ""])
    assert mask("x s3cr3t-longer y s3cr3t") == f"x {MASK} y {MASK}"
    assert mask("ab stays: too short to mask") == "ab stays: too short to mask"
    assert Masker()("anything") == "anything" and not Masker()
    assert process_secrets({"PREFECT_API_AUTH_STRING": "admin:pw-9876"})[:2] == [
        "admin:pw-9876",
        "pw-9876",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"pass": ["WSJOBS_SMTP_PASSWORD"]}, "cannot be passed to steps"),
        ({"pass": ["PREFECT_API_KEY"]}, "cannot be passed to steps"),
        ({"set": {"PARAM_X": "1"}}, "is set by the step runner"),
        ({"set": {"WSJOBS_DEVICE": "1"}}, "is set by the step runner"),
        ({"set": {"BAD NAME": "1"}}, "is not a valid variable name"),
        ({"other": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_env_declarations_are_one_line_errors(
    tmp_path: Path, env: dict[str, object], message: str
) -> None:
    import yaml

    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump({"name": "a", "steps": [{"name": "s", "script": "true"}], "env": env})
    )
    with pytest.raises(CatalogError, match=message):
        load_actions(tmp_path)
    (tmp_path / "inv.yaml").write_text(yaml.safe_dump({"devices": [{"name": "d", "env": env}]}))
    with pytest.raises(CatalogError, match=message):
        load_inventory(tmp_path / "inv.yaml")
