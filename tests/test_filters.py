"""Filters are data: spec → (SQL, parameters, description), table-driven (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from workspaces_jobs.reporting import filters
from workspaces_jobs.reporting.filters import PREDEFINED, FilterSpec, build_where

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


TODAY = {"run_from": utc(2026, 11, 24, 23), "run_to": utc(2026, 11, 25, 23)}
WEEK = {"run_from": utc(2026, 11, 22, 23), "run_to": utc(2026, 11, 29, 23)}
RUN = "coalesce(j.started, j.expected_start, j.created)"
WINDOW = f"{RUN} >= $run_from AND {RUN} < $run_to"


def search_sql(param: str, escape: bool) -> str:
    tail = " ESCAPE '\\'" if escape else ""
    return "(" + " OR ".join(f"{c} ILIKE ${param}{tail}" for c in filters.SEARCH_COLUMNS) + ")"


CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], str]] = [
    ("default is today", {}, WINDOW, TODAY, "run today"),
    ("all", {"age": "all"}, "TRUE", {}, "all jobs"),
    (
        "friendly statuses",
        {"age": "week", "statuses": ["error", "completed-with-errors", "Error"]},
        f"{WINDOW} AND j.status IN ($status_0, $status_1)",
        {**WEEK, "status_0": "Error", "status_1": "Completed with errors"},
        "run this week, status is Error or Completed with errors",
    ),
    (
        "since/until replace the default window; until includes its day",
        {"since": "2026-11-01", "until": "2026-11-30"},
        f"{RUN} >= $since AND {RUN} < $until",
        {"since": utc(2026, 10, 31, 23), "until": utc(2026, 11, 30, 23)},
        "run since 2026-11-01, run until 2026-11-30",
    ),
    (
        "owners, actions and devices",
        {"age": "all", "owners": ["alice", "@me"], "actions": ["patch"], "devices": ["t1"]},
        "j.owner IN ($owner_0, $owner_1) AND j.action IN ($action_0) AND "
        "j.id IN (SELECT d.job_id FROM job_devices d WHERE d.device IN ($device_0))",
        {"owner_0": "alice", "owner_1": "zoe", "action_0": "patch", "device_0": "t1"},
        "owner is alice or you (zoe), action is patch, ran on t1",
    ),
    (
        "plain search: no ESCAPE needed",
        {"age": "all", "search": "OpenSSL"},
        search_sql("search", escape=False),
        {"search": "%OpenSSL%"},
        'any column contains "OpenSSL"',
    ),
    (
        "search for 50% is literal",
        {"age": "all", "search": "50%"},
        search_sql("search", escape=True),
        {"search": "%50\\%%"},
        'any column contains "50%"',
    ),
    (
        "underscore and backslash are escaped",
        {"age": "all", "search": "a_b\\c"},
        search_sql("search", escape=True),
        {"search": "%a\\_b\\\\c%"},
        'any column contains "a_b\\c"',
    ),
    (
        "SQL in the search text stays a parameter",
        {"age": "all", "search": '"; drop table jobs; --'},
        search_sql("search", escape=False),
        {"search": '%"; drop table jobs; --%'},
        'any column contains ""; drop table jobs; --"',
    ),
    (
        "log search is cut to the window (minus clock skew)",
        {"age": "today", "search_logs": "timeout"},
        f"{WINDOW} AND j.id IN (SELECT l.job_id FROM logs l WHERE l.ts >= $logs_from "
        "AND contains(lower(l.message), lower($search_logs)))",
        {**TODAY, "logs_from": utc(2026, 11, 24, 22), "search_logs": "timeout"},
        'run today, a log line contains "timeout"',
    ),
    (
        "log search at any time",
        {"age": "all", "search_logs": "100%"},
        "j.id IN (SELECT l.job_id FROM logs l WHERE contains(lower(l.message),"
        " lower($search_logs)))",
        {"search_logs": "100%"},
        'a log line contains "100%"',
    ),
    (
        "started more than ... ago",
        {"age": "all", "statuses": ["running"], "started_over": "90m"},
        "j.status IN ($status_0) AND j.started < $started_before",
        {"status_0": "In progress", "started_before": utc(2026, 11, 25, 10, 30)},
        "status is In progress, started more than 90m ago",
    ),
]


@pytest.mark.parametrize(
    ("fields", "sql", "params", "description"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_build_where(
    fields: dict[str, Any], sql: str, params: dict[str, Any], description: str
) -> None:
    where = build_where(FilterSpec.make(**fields), tz=PARIS, now=NOW, user=lambda: "zoe")
    assert where.sql == sql
    assert where.params == params
    assert where.description == description


PREDEFINED_CASES = {
    "errors-this-week": (
        f"{WINDOW} AND j.status IN ($status_0)",
        "run this week, status is Error",
    ),
    "completed-with-errors": ("j.status IN ($status_0)", "status is Completed with errors"),
    "pending": ("j.status IN ($status_0)", "status is Pending"),
    "in-progress-too-long": (
        "j.status IN ($status_0) AND j.started < $started_before",
        "status is In progress, started more than 1h ago",
    ),
    "my-jobs-today": (f"{WINDOW} AND j.owner IN ($owner_0)", "run today, owner is you (zoe)"),
    "upcoming": ("j.status IN ($status_0)", "status is Pending"),
    "canceled-by-me": (
        "j.id IN (SELECT a.job_id FROM activity a WHERE a.action IN ('cancel', 'kill')"
        " AND a.who IN ($stopped_by_0))",
        "canceled or killed by you (zoe)",
    ),
}


@pytest.mark.parametrize("name", sorted(PREDEFINED_CASES))
def test_predefined_filters(name: str) -> None:
    where = build_where(PREDEFINED[name], tz=PARIS, now=NOW, user=lambda: "zoe")
    assert (where.sql, where.description) == PREDEFINED_CASES[name]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"statuses": ["broken"]}, "unknown status 'broken': use one of pending"),
        ({"age": "decade"}, "unknown age 'decade': use one of today, week"),
        ({"columns": "id,secret"}, "unknown column 'secret': use some of id, action"),
        ({"sort": "parameters"}, "cannot sort by 'parameters': use one of id"),
        ({"sort": "id; drop table jobs"}, "cannot sort by 'id; drop table jobs'"),
        ({"since": "yesterday"}, "bad date 'yesterday': write YYYY-MM-DD"),
        ({"started_over": "long"}, "bad duration 'long'"),
        ({"tz": "Moon/Base"}, "unknown time zone 'Moon/Base'"),
        ({"limit": -1}, "bad limit -1"),
        ({"colour": "red"}, "unknown filter field(s) colour"),
    ],
)
def test_validation_errors_say_how_to_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        FilterSpec.make(**fields)


def test_order_by_uses_the_allowlist() -> None:
    assert filters.order_by(FilterSpec()) == f"{RUN} DESC NULLS LAST, j.id DESC"
    spec = FilterSpec.make(sort="devices_failed", desc=False)
    assert filters.order_by(spec) == "coalesce(j.devices_failed, 0) ASC NULLS LAST, j.id ASC"


def test_refine_replaces_fields_and_json_round_trips() -> None:
    base = PREDEFINED["errors-this-week"]
    refined = base.refined(FilterSpec.make(owners=["bob"], age="month"))
    assert refined == FilterSpec(age="month", statuses=("Error",), owners=("bob",))
    assert FilterSpec.from_json(refined.to_json()) == refined
    assert refined.to_json() == {"age": "month", "statuses": ["Error"], "owners": ["bob"]}


@pytest.mark.parametrize(
    ("name", "ok"),
    [("team-errors", True), ("a_1", True), ("Bad Name", False), ("pending", False), ("", False)],
)
def test_filter_names(name: str, ok: bool) -> None:
    if ok:
        assert filters.check_filter_name(name) == name
    else:
        with pytest.raises(ValueError):
            filters.check_filter_name(name)


def test_escape_like() -> None:
    assert filters.escape_like("50%_\\") == "50\\%\\_\\\\"
    assert filters.contains_pattern("x") == "%x%"
