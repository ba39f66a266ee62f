"""Windows and the default sort use when a job runs (start, or expected start while Pending).

The clock is injected: one second before and one second after a midnight, never the wall
clock. A real DuckDB history file, written with the synthetic-row helper.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.listdata import list_json
from workspaces_jobs.reporting import synthetic
from workspaces_jobs.reporting.query import JobQuery
from workspaces_jobs.reporting.store import open_store

BEFORE = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
AFTER = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One history for the module: its tests only read it (a new history costs ~1.5 s CPU)."""
    path = tmp_path_factory.mktemp("run-time") / "history.duckdb"
    jobs = [
        {  # the nightly run: pre-created days ago, ran today at 02:00
            "info": "nightly",
            "status": "Completed",
            "created": utc(2026, 11, 27, 10),
            "expected_start": utc(2026, 11, 30, 2),
            "started": utc(2026, 11, 30, 2, 0, 5),
        },
        {  # next week's run, pre-created today
            "info": "next week",
            "status": "Pending",
            "created": utc(2026, 11, 30, 10),
            "expected_start": utc(2026, 12, 7, 2),
            "started": None,
        },
        {  # due at the coming midnight
            "info": "midnight",
            "status": "Pending",
            "created": utc(2026, 11, 30, 12),
            "expected_start": utc(2026, 12, 1, 0, 0, 0),
            "started": None,
        },
        {  # an ordinary job run now-ish (created = started)
            "info": "adhoc",
            "status": "Error",
            "created": utc(2026, 11, 30, 23, 0),
            "started": utc(2026, 11, 30, 23, 0),
        },
    ]
    with open_store(path) as con:
        synthetic.add_jobs(con, jobs)
    return path


def _infos(path: Path, now: datetime, filter: str | None = None, **fields: object) -> list[str]:
    rows = JobQuery(filter, path=path, now=now, tz="UTC", **fields).rows()
    return [r["info"] for r in rows]


def test_today_by_run_time_one_second_before_midnight(history: Path) -> None:
    # newest run first; next week's pre-created run is not "today" although created today
    assert _infos(history, BEFORE, age="today", columns="info") == ["adhoc", "nightly"]
    assert _infos(history, BEFORE, age="month", columns="info") == ["adhoc", "nightly"]


def test_today_by_run_time_one_second_after_midnight(history: Path) -> None:
    assert _infos(history, AFTER, age="today", columns="info") == ["midnight"]
    assert _infos(history, AFTER, age="month", columns="info") == ["next week", "midnight"]
    # Tuesday: the week began on Monday the 30th; next Monday's run is outside it
    assert _infos(history, AFTER, age="week", columns="info") == ["midnight", "adhoc", "nightly"]


def test_upcoming_lists_the_next_pending_jobs_soonest_first(history: Path) -> None:
    for now in (BEFORE, AFTER):
        assert _infos(history, now, "upcoming", columns="info") == ["midnight", "next week"]
    q = JobQuery("upcoming", path=history, now=BEFORE, tz="UTC")
    assert q.description.startswith("status is Pending; sorted by run_at ascending")


def test_run_at_and_expected_start_columns(history: Path) -> None:
    rows = JobQuery(
        path=history, now=AFTER, tz="UTC", age="all", columns="info,run_at,expected_start,created"
    ).rows()
    by_info = {r["info"]: r for r in rows}
    assert by_info["nightly"]["run_at"] == utc(2026, 11, 30, 2, 0, 5)  # its start
    assert by_info["next week"]["run_at"] == utc(2026, 12, 7, 2)  # its expected start
    assert by_info["next week"]["expected_start"] == utc(2026, 12, 7, 2)
    assert [r["info"] for r in rows] == ["next week", "midnight", "adhoc", "nightly"]


def test_cli_accepts_expected_start_column(history: Path) -> None:
    rows = list_json(history, "--age", "all", "--columns", "info,expected_start", "--asc")
    assert rows[-1]["info"] == "next week"
    assert rows[-1]["expected_start"].startswith("2026-12-07T02:00:00")
