"""A small, known history for the list/filter/export tests, written through the real schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from workspaces_jobs.reporting import synthetic
from workspaces_jobs.reporting.store import open_store

INJECTION = '"; drop table jobs; --'


def make_history(path: Path, now: datetime | None = None) -> dict[str, str]:
    """Seven jobs with tricky text; returns {label: job id}."""
    now = now or datetime.now(UTC)
    # Seconds apart, so "today" holds them all unless a test starts at 00:00:14 UTC.
    step = timedelta(seconds=2)
    jobs: list[dict[str, Any]] = [
        {
            "info": "raise pool to 50% capacity",
            "owner": "alice",
            "action": "patch",
            "devices": ["t1"],
            "logs": ["progress 50% reached", "done"],
        },
        {
            "info": "rename foo_bar",
            "status": "Error",
            "owner": "bob",
            "action": "patch",
            "devices": [
                {
                    "device": "t2",
                    "status": "Error",
                    "steps": [{"step": "precheck", "status": "Failed", "exit_code": 3}],
                }
            ],
            "logs": [
                {
                    "message": "file foo_bar missing",
                    "device": "t2",
                    "step": "precheck",
                    "stream": "err",
                    "level": "WARNING",
                }
            ],
        },
        {
            "info": "it's a reboot",
            "status": "Completed with errors",
            "owner": "alice",
            "action": "reboot",
            "devices": [
                {"device": "t1", "status": "Completed"},
                {"device": "t3", "status": "Error"},
            ],
        },
        {
            "info": INJECTION,
            "status": "Canceled by the user",
            "owner": "carol",
            "action": "inject",
            "parameters": {"cmd": "x'; DROP TABLE jobs; --"},
            "canceled_by": "dave",
        },
        {
            "info": "plain job",
            "status": "Pending",
            "owner": "alice",
            "action": "ok",
            "devices": ["t1"],
        },
        {
            "info": "copy C:\\temp\\new",
            "status": "In progress",
            "owner": "bob",
            "action": "ok",
            "started": now - timedelta(hours=2),
            "devices": ["t2"],
        },
        {
            "info": "old failure",
            "status": "Error",
            "owner": "alice",
            "action": "patch",
            "created": now - timedelta(days=400),
            "devices": ["t1"],
        },
    ]
    for i, job in enumerate(jobs):
        job.setdefault("created", now - (i + 1) * step)
    with open_store(path) as con:
        ids = synthetic.add_jobs(con, jobs)
    labels = ["fifty", "underscore", "quote", "injection", "pending", "backslash", "old"]
    return dict(zip(labels, ids, strict=True))


def wsjobs(history: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess on ``history`` (no sync unless asked)."""
    env = {**os.environ, "WSJOBS_HISTORY": str(history), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"wsjobs {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def list_json(history: Path, *args: str) -> list[dict[str, Any]]:
    out = wsjobs(history, "list", "--no-sync", "--json", *args).stdout
    return list(json.loads(out))
