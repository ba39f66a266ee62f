"""The documented audit queries (docs/history.md), run against a synced history of known jobs.

The queries are read from docs/history.md itself, so the documented
SQL cannot drift from what works.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from historyhelpers import (
    audit_jobs_fixture,  # noqa: F401  (the session fixture audit_jobs)
    keep_only,
)

from workspaces_jobs.jobfacts import JobFact
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.sync import sync_history

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server

HISTORY_DOC = Path(__file__).resolve().parents[1] / "docs" / "history.md"


def readme_queries() -> dict[int, str]:
    section = HISTORY_DOC.read_text(encoding="utf-8")
    queries = {}
    # The page also shows the ATTACH and time-travel lines; audit queries are the
    # blocks that open with a numbered title.
    for block in re.findall(r"```sql\n(.*?)```", section, re.S):
        m = re.match(r"-- (\d+)\. ", block)
        if m:
            queries[int(m.group(1))] = block
    return queries


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, audit_jobs: dict[str, JobFact]) -> Path:
    path = tmp_path_factory.mktemp("audit") / "history.duckdb"
    sync_history(path)
    keep_only(path, [job.id for job in audit_jobs.values()])  # other tests' jobs out
    return path


def run(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with open_store(path, read_only=True) as con:
        return con.cursor().execute(sql).fetchall()


def test_readme_has_six_numbered_audit_queries() -> None:
    assert sorted(readme_queries()) == [1, 2, 3, 4, 5, 6]


def test_who_ran_what_on_which_device(history: Path) -> None:
    got = run(history, readme_queries()[1])
    assert [r[0] for r in got] == sorted(r[0] for r in got)  # ordered by device
    assert sorted(r[:5] for r in got) == [
        ("t1", "alice", "ok", "audit: fine everywhere", "Completed"),
        ("t1", "bob", "mixed", "audit: check fails on t3", "Completed"),
        ("t2", "alice", "broken", "audit: boom on t2", "Error"),
        ("t2", "bob", "mixed", "audit: check fails on t3", "Completed"),
        ("t3", "bob", "mixed", "audit: check fails on t3", "Completed with errors"),
    ]  # the canceled job never started on t3


def test_failures_per_action_this_quarter(history: Path) -> None:
    assert run(history, readme_queries()[2]) == [
        ("broken", 1, 1, 0, 100.0),
        ("mixed", 1, 0, 1, 100.0),
        ("ok", 2, 0, 0, 0.0),
    ]


def test_log_lines_mentioning_a_term(history: Path) -> None:
    got = run(history, readme_queries()[3])
    assert [r[1:] for r in got] == [("broken", "alice", "t2", "boom", "out", "about to fail")]


def test_failed_steps_with_exit_codes(history: Path) -> None:
    got = run(history, readme_queries()[4])
    assert [r[:6] for r in got] == [
        ("t2", "broken", "boom", True, 7, "alice"),
        ("t3", "mixed", "check", False, 3, "bob"),
    ]


def test_canceled_jobs_and_who_canceled(history: Path, audit_jobs: dict[str, JobFact]) -> None:
    got = run(history, readme_queries()[5])
    assert [r[:5] for r in got] == [
        (audit_jobs["canceled"].id, "ok", "audit: never ran", "bob", "carol")
    ]


def test_jobs_stopped_by_someone_else(history: Path, audit_jobs: dict[str, JobFact]) -> None:
    """Activity rows as the shared functions write them (bob launched, carol canceled;
    bob's own cancel of his job is not listed)."""
    from datetime import UTC, datetime

    from workspaces_jobs.activity import record

    job = audit_jobs["canceled"].id
    at = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    assert record("carol", "cancel", job_id=job, source="web", at=at, history=history)
    assert record("bob", "kill", job_id=job, source="cli", at=at, history=history)
    got = run(history, readme_queries()[6])
    assert [r[:6] for r in got] == [(at, "carol", "cancel", "web", job, "ok")]
