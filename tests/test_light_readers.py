"""``wsjobs show`` and ``wsjobs list`` never import Prefect (0.65-0.8 s of a read command):
each runs in a fresh process that reports whether ``prefect`` entered ``sys.modules``, and
the Python API reads a job with that same httpx reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from historyhelpers import audit_jobs_fixture  # noqa: F401  (the session fixture audit_jobs)

from workspaces_jobs import apiread, jobs
from workspaces_jobs.jobfacts import JobFact
from workspaces_jobs.reporting.sync import sync_history

pytestmark = pytest.mark.usefixtures("prefect_server")

#: Runs the CLI in-process, then says which Prefect modules were imported (stderr, last line).
PROBE = """
import json, sys
from workspaces_jobs.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
loaded = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
print(json.dumps({"code": code, "prefect": loaded[:5]}), file=sys.stderr)
"""


def _probe(*args: str, env: dict[str, str] | None = None) -> tuple[str, dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), out.stderr
    return out.stdout, report


def test_show_reads_the_api_without_prefect(audit_jobs: dict[str, JobFact]) -> None:
    job = audit_jobs["mixed"]  # three devices, a failed non-critical step
    stdout, report = _probe("show", job.id, "--json")
    assert report["prefect"] == [], report
    shown = json.loads(stdout)
    assert shown["id"] == job.id and shown["status"] == job.status
    # One reader of one job: the Python API's is the httpx one show uses.
    assert jobs.read_job is apiread.read_job
    read = jobs.read_job(job.id)
    assert read.status == job.status and len(read.steps) == len(job.steps) > 0
    assert [d["device"] for d in shown["devices"]] == [d.device for d in read.devices]
    assert len(shown["logs"]) == len(read.logs) > 0


def test_list_reads_the_history_without_prefect(
    audit_jobs: dict[str, JobFact], tmp_path: Path
) -> None:
    history = tmp_path / "history.duckdb"
    sync_history(history)
    stdout, report = _probe("list", "--history", str(history), "--age", "all", "--json")
    assert report["prefect"] == [], report
    listed = {row["id"] for row in json.loads(stdout)}
    assert {job.id for job in audit_jobs.values()} <= listed
