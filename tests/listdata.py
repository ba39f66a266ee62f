"""A small, known history for the list/filter/export tests, written through the real schema.

Everything here stands on a pinned instant (:data:`NOW` unless a test passes another), never
on the wall clock: the history is built relative to it and the CLI runs with ``WSJOBS_NOW``
set to it, so "today" means the same thing to the data and to the query at any hour.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from workspaces_jobs.reporting import synthetic, windows
from workspaces_jobs.reporting.store import open_store

INJECTION = '"; drop table jobs; --'

#: The instant the list tests stand on: a Wednesday 12:30 UTC, at least 30 minutes from a
#: local midnight in every zone (UTC-12 to UTC+14). tests/test_clock_edges.py runs the
#: window cases on the boundaries themselves.
NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)


def start_of_today(now: datetime, zones: tuple[str, ...] = ("UTC",)) -> datetime:
    """The latest local midnight at or before ``now`` among ``zones``: "today" in all of them."""
    starts = [windows.age_window("today", tz=windows.resolve_zone(z), now=now).start for z in zones]
    return max(s for s in starts if s is not None)


def recent(now: datetime, count: int, zones: tuple[str, ...] = ("UTC",)) -> list[datetime]:
    """``count`` distinct instants, newest first, that are "today" at ``now`` in every zone.

    Two seconds apart when there is room; squeezed between midnight and ``now`` right after
    midnight; at exactly midnight (Monday 00:00:00) they start at midnight itself, a few
    microseconds apart (the window is ``[midnight, next midnight)``).
    """
    start = start_of_today(now, zones)
    step = min(timedelta(seconds=2), (now - start) / (count + 1))
    if step < timedelta(microseconds=1):
        return [start + timedelta(microseconds=count - i) for i in range(count)]
    return [now - (i + 1) * step for i in range(count)]


def make_history(
    path: Path, now: datetime = NOW, zones: tuple[str, ...] = ("UTC",)
) -> dict[str, str]:
    """Seven jobs with tricky text; six are "today" at ``now`` (in each of ``zones``), one is
    400 days old. Returns {label: job id}."""
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
    for job, created in zip(jobs, recent(now, len(jobs), zones), strict=True):
        job.setdefault("created", created)
    with open_store(path) as con:
        ids = synthetic.add_jobs(con, jobs)
    labels = ["fifty", "underscore", "quote", "injection", "pending", "backslash", "old"]
    return dict(zip(labels, ids, strict=True))


def wsjobs(
    history: Path, *args: str, check: bool = True, now: datetime | None = NOW
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess on ``history`` (no sync unless asked), its clock
    pinned to ``now`` (``None``: the real clock, for jobs a real server just ran)."""
    env = {**os.environ, "WSJOBS_HISTORY": str(history), "COLUMNS": "200"}
    env.pop("WSJOBS_NOW", None)
    if now is not None:
        env["WSJOBS_NOW"] = now.isoformat()
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


def list_json(history: Path, *args: str, now: datetime | None = NOW) -> list[dict[str, Any]]:
    out = wsjobs(history, "list", "--no-sync", "--json", *args, now=now).stdout
    return list(json.loads(out))
