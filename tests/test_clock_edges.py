"""The list's windows on the calendar's edges: 23:59:59, 00:00:01, Monday 00:00, a month
and a quarter change, in UTC and in zones that are not UTC.

Each case pins the clock (``now=`` for the Python API, ``WSJOBS_NOW`` for the CLI and the
web app) and builds a history around that instant: six jobs made "today" (between local
midnight and the instant), one made in the last second before local midnight, one 400
days old. Which windows must hold the last-second job is written by hand in the table,
so the expectations do not come from the code under test. This is what CI meets when it
runs at 00:00 UTC on the first of a month: these cases pass on any day, at any hour.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from listdata import list_json, make_history, start_of_today
from webauth import signed_in

from workspaces_jobs import clock
from workspaces_jobs.errors import BadInput
from workspaces_jobs.reporting import windows
from workspaces_jobs.reporting.query import JobQuery
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.synthetic import add_jobs

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

from workspaces_jobs.web.app import create_app
from workspaces_jobs.web.state import WebState


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# (id, zone, pinned instant, windows that START at today's local midnight, so they do NOT
# hold a job made one second before it)
EDGES = [
    ("utc-monday-23:59:59", "UTC", utc(2026, 11, 30, 23, 59, 59), {"today", "week"}),
    ("utc-dec-1-00:00:01", "UTC", utc(2026, 12, 1, 0, 0, 1), {"today", "month"}),
    ("utc-monday-00:00:00", "UTC", utc(2026, 11, 30), {"today", "week"}),
    ("utc-quarter-oct-1", "UTC", utc(2026, 10, 1, 0, 0, 1), {"today", "month", "quarter"}),
    (
        "utc-new-year",
        "UTC",
        utc(2027, 1, 1, 0, 0, 1),
        {"today", "month", "quarter", "year"},
    ),
    # 00:00:01 on 1 December in Paris is still 30 November (a Monday) in UTC.
    ("paris-dec-1-00:00:01", "Europe/Paris", utc(2026, 11, 30, 23, 0, 1), {"today", "month"}),
    # Monday 00:00 in Paris is Sunday 23:00 in UTC.
    ("paris-monday-00:00", "Europe/Paris", utc(2026, 11, 29, 23), {"today", "week"}),
    ("paris-sunday-23:59:59", "Europe/Paris", utc(2026, 11, 29, 22, 59, 59), {"today"}),
    # New York's quarter starts at 04:00 UTC (EDT); at 03:59:59 UTC it is still Q3 there.
    (
        "new-york-quarter-oct-1",
        "America/New_York",
        utc(2026, 10, 1, 4, 0, 1),
        {"today", "month", "quarter"},
    ),
    ("tokyo-sunday-23:59:59", "Asia/Tokyo", utc(2026, 11, 29, 14, 59, 59), {"today"}),
    ("tokyo-monday-23:59:59", "Asia/Tokyo", utc(2026, 11, 30, 14, 59, 59), {"today", "week"}),
]
AGES = ("today", "week", "month", "quarter", "year", "all")


class Edge:
    """One pinned instant with its history: job ids by group."""

    def __init__(self, path: Path, zone: str, now: datetime, starts_today: set[str]) -> None:
        self.path, self.zone, self.now, self.starts_today = path, zone, now, starts_today
        ids = make_history(path, now=now, zones=(zone,))
        self.old = ids.pop("old")
        # Windows use when a job runs (its start): make_history's In progress job started
        # 2 h before ``now``, so right after midnight it ran yesterday, like ``yesterday``.
        self.earlier: set[str] = set()
        if now - timedelta(hours=2) < start_of_today(now, (zone,)):
            self.earlier.add(ids.pop("backslash"))
        self.today = set(ids.values())
        self.last_second = start_of_today(now, (zone,)) - timedelta(seconds=1)
        with open_store(path) as con:
            (self.yesterday,) = add_jobs(
                con, [{"info": "made at 23:59:59 local", "created": self.last_second}]
            )

    def expected(self, age: str) -> set[str]:
        """What ``age`` must list, from the hand-written table, not from the code."""
        if age == "all":
            return self.today | self.earlier | {self.yesterday, self.old}
        held = set(self.today)
        if age not in self.starts_today:
            held |= {self.yesterday, *self.earlier}
        return held


@pytest.fixture(scope="module", params=EDGES, ids=[e[0] for e in EDGES])
def edge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Edge:
    """One history per edge for the module: the three faces only read it (was one per test:
    33 histories instead of 11, 30-48 s of setup each on a loaded machine)."""
    name, zone, now, starts_today = request.param
    return Edge(tmp_path_factory.mktemp(name) / "history.duckdb", zone, now, starts_today)


def test_windows_at_the_edge_through_the_python_api(edge: Edge) -> None:
    tz = windows.resolve_zone(edge.zone)
    for age in AGES:
        got = {
            r["id"] for r in JobQuery(path=edge.path, age=age, tz=edge.zone, now=edge.now).rows()
        }
        assert got == edge.expected(age), age
        window = windows.age_window(age, tz=tz, now=edge.now)
        assert window.contains(edge.now), age
    # The saved-filter path: predefined filters decide "today"/"this week" the same way.
    mine = JobQuery("my-jobs-today", path=edge.path, tz=edge.zone, now=edge.now, user=lambda: "bob")
    bobs = 1 if edge.earlier else 2  # bob's In progress job may have run yesterday
    assert {r["id"] for r in mine.rows()} <= edge.today and mine.count() == bobs
    errors = JobQuery("errors-this-week", path=edge.path, tz=edge.zone, now=edge.now).rows()
    assert {r["id"] for r in errors} == {r["id"] for r in errors if r["id"] in edge.today}
    assert len(errors) == 1  # "rename foo_bar" (Error); the 400-day-old Error is out


def test_windows_at_the_edge_through_the_cli(edge: Edge) -> None:
    # Default window (today, from the view settings) and one period window per case.
    default = list_json(edge.path, "--tz", edge.zone, "--limit", "0", now=edge.now)
    assert {r["id"] for r in default} == edge.expected("today")
    period = "week" if "week" in edge.starts_today else "month"
    rows = list_json(edge.path, "--age", period, "--tz", edge.zone, "--limit", "0", now=edge.now)
    assert {r["id"] for r in rows} == edge.expected(period)


def test_windows_at_the_edge_in_the_web_view(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSJOBS_NOW", edge.now.isoformat())
    monkeypatch.setenv("TZ", edge.zone)  # the web view uses the machine's zone
    state = WebState(edge.path, sync_every=0)
    with TestClient(create_app(state), base_url="http://127.0.0.1:8765") as client:
        signed_in(client)
        for age in ("today", "week", "month", "quarter"):
            page = client.get("/", params={"age": age})
            assert page.status_code == 200, page.text
            shown = {i for i in edge.expected("all") if f'data-job="{i}"' in page.text}
            assert shown == edge.expected(age), age


def test_the_pinned_clock_reads_iso_instants_and_rejects_junk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WSJOBS_NOW", "2026-12-01T00:00:01Z")
    assert clock.now() == utc(2026, 12, 1, 0, 0, 1)
    monkeypatch.setenv("WSJOBS_NOW", "2026-12-01T01:00:01+01:00")
    assert clock.now() == utc(2026, 12, 1, 0, 0, 1)
    monkeypatch.setenv("WSJOBS_NOW", "2026-12-01 00:00:01")  # no offset: UTC
    assert clock.now() == utc(2026, 12, 1, 0, 0, 1)
    assert windows.age_window("month", tz=UTC).start == utc(2026, 12, 1)
    monkeypatch.setenv("WSJOBS_NOW", "tomorrow")
    with pytest.raises(BadInput, match="bad WSJOBS_NOW 'tomorrow': write an ISO instant"):
        clock.now()
    monkeypatch.delenv("WSJOBS_NOW")
    before = datetime.now(UTC)
    assert before <= clock.now() <= datetime.now(UTC)
