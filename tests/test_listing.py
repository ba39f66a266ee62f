"""The jobs list over a real history file: search, filters, windows, device history,
saved filters and view settings — through the Python API and the real CLI."""

from __future__ import annotations

import json
import uuid
from datetime import UTC
from pathlib import Path

import duckdb
import pytest
from listdata import INJECTION, NOW, list_json, make_history, wsjobs

from workspaces_jobs.reporting import windows
from workspaces_jobs.reporting.query import JobQuery
from workspaces_jobs.reporting.store import open_store


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("listing") / "history.duckdb"
    return path, make_history(path)


def job_count(path: Path) -> int:
    with open_store(path, read_only=True) as con:
        row = con.execute("SELECT count(*) FROM jobs").fetchone()
        return int(row[0]) if row else -1


SEARCHES = [
    ("50%", ["fifty"]),  # literal %, not "everything"
    ("%", ["fifty"]),
    ("_", ["underscore"]),  # literal _, not "any character"
    ("'", ["quote", "injection"]),  # info "it's", parameters "x'; DROP ..."
    (INJECTION, ["injection"]),
    ("DROP TABLE", ["injection"]),  # parameters are searched
    ("\\temp\\", ["backslash"]),
    ("PLAIN JOB", ["pending"]),  # case-insensitive
    ("carol", ["injection"]),  # owner column
    ("dave", ["injection"]),  # canceled_by column
    ("completed with errors", ["quote"]),  # status column
    ("no such text", []),
]


@pytest.mark.parametrize(("text", "labels"), SEARCHES, ids=[s[0] for s in SEARCHES])
def test_search_any_column(
    history: tuple[Path, dict[str, str]], text: str, labels: list[str]
) -> None:
    path, ids = history
    rows = JobQuery(path=path, age="all", search=text, now=NOW).rows()
    assert {r["id"] for r in rows} == {ids[label] for label in labels}
    assert job_count(path) == 7  # the table survives whatever was searched


def test_search_injection_through_the_cli(history: tuple[Path, dict[str, str]]) -> None:
    path, ids = history
    rows = list_json(path, "--age", "all", "--search", INJECTION)
    assert [r["id"] for r in rows] == [ids["injection"]]
    assert rows[0]["info"] == INJECTION
    rows = list_json(path, "--age", "all", "--search-logs", "'; drop table logs; --")
    assert rows == []
    assert job_count(path) == 7


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("50%", ["fifty"]),
        ("foo_bar", ["underscore"]),
        ("%", ["fifty"]),
        ("MISSING", ["underscore"]),
    ],
)
def test_search_logs(history: tuple[Path, dict[str, str]], text: str, labels: list[str]) -> None:
    path, ids = history
    rows = JobQuery(path=path, age="all", search_logs=text, now=NOW).rows()
    assert {r["id"] for r in rows} == {ids[label] for label in labels}


def test_filters_combine(history: tuple[Path, dict[str, str]]) -> None:
    path, ids = history
    q = JobQuery(path=path, age="all", now=NOW)
    assert {r["id"] for r in q.where(status="error").rows()} == {ids["underscore"], ids["old"]}
    assert {r["id"] for r in q.where(status=["error"], owner="alice").rows()} == {ids["old"]}
    assert {r["id"] for r in q.where(device="t3").rows()} == {ids["quote"]}
    assert {r["id"] for r in q.where(action=["reboot", "inject"]).rows()} == {
        ids["quote"],
        ids["injection"],
    }
    # Default window is today: the 400-day-old job is not in it.
    assert ids["old"] not in {r["id"] for r in JobQuery(path=path, tz="UTC", now=NOW).rows()}
    assert JobQuery(path=path, age="year", now=NOW).count() == 6
    assert q.count() == 7


def test_predefined_filters(history: tuple[Path, dict[str, str]]) -> None:
    path, ids = history
    too_long = JobQuery("in-progress-too-long", path=path, now=NOW).rows()
    assert [r["id"] for r in too_long] == [ids["backslash"]]
    assert [r["id"] for r in JobQuery("pending", path=path, now=NOW).rows()] == [ids["pending"]]
    mine = JobQuery("my-jobs-today", path=path, tz="UTC", user=lambda: "bob", now=NOW).rows()
    assert {r["id"] for r in mine} == {ids["underscore"], ids["backslash"]}


def test_rows_sort_limit_columns_and_device_counts(history: tuple[Path, dict[str, str]]) -> None:
    path, ids = history
    rows = JobQuery(path=path, age="all", sort="created", desc=False, limit=2, now=NOW).rows()
    assert [r["id"] for r in rows] == [ids["old"], ids["backslash"]]
    rows = JobQuery(
        path=path, age="all", columns="info,devices,devices_ok,devices_failed", now=NOW
    ).rows()
    by_id = {r["id"]: r for r in rows}
    assert list(rows[0]) == ["id", "info", "devices", "devices_ok", "devices_failed"]
    assert by_id[ids["quote"]] == {
        "id": ids["quote"],
        "info": "it's a reboot",
        "devices": "t1,t3",
        "devices_ok": 1,
        "devices_failed": 1,
    }
    assert by_id[ids["injection"]]["devices"] is None
    assert by_id[ids["injection"]]["devices_ok"] == 0
    # Sorting by an aggregate goes through the one-statement plan.
    top = JobQuery(path=path, age="all", sort="devices_failed", limit=3, now=NOW).rows()
    assert [r["devices_failed"] for r in top] == [1, 1, 1]
    low = JobQuery(path=path, age="all", sort="devices_failed", desc=False, limit=1, now=NOW).rows()
    assert low[0]["devices_failed"] == 0


def test_device_history(history: tuple[Path, dict[str, str]]) -> None:
    path, ids = history
    rows = json.loads(wsjobs(path, "device", "t3", "--no-sync", "--json").stdout)
    assert [(r["id"], r["status"], r["device_status"]) for r in rows] == [
        (ids["quote"], "Completed with errors", "Error")
    ]
    t1 = JobQuery(path=path, history_of="t1", now=NOW).rows()  # default age: all
    assert {r["id"] for r in t1} == {ids["fifty"], ids["quote"], ids["pending"], ids["old"]}
    out = wsjobs(path, "device", "t2", "--no-sync").stdout
    assert "on device t2" in out and "2 of 2 job(s)" in out


def test_saved_filter_round_trip(tmp_path: Path) -> None:
    from workspaces_jobs.activity import local_user

    path = tmp_path / "history.duckdb"
    ids = make_history(path)
    saved = wsjobs(path, "filters", "save", "bob-errors", "--status", "error", "--owner", "bob")
    assert "Saved filter bob-errors: status is Error, owner is bob" in saved.stdout
    listed = json.loads(wsjobs(path, "filters", "--json").stdout)
    mine = [f for f in listed if f["name"] == "bob-errors"]
    assert mine == [
        {
            "name": "bob-errors",
            "predefined": False,
            "description": "status is Error, owner is bob",
            "spec": {"statuses": ["Error"], "owners": ["bob"]},
            "owner": local_user(),  # who saved it (the OS user without a login)
        }
    ]
    assert {f["name"] for f in listed if f["predefined"]} >= {
        "errors-this-week",
        "completed-with-errors",
        "pending",
        "in-progress-too-long",
        "my-jobs-today",
    }
    assert [r["id"] for r in list_json(path, "--filter", "bob-errors", "--tz", "UTC")] == [
        ids["underscore"]
    ]
    # Flags refine a filter: --owner replaces the saved owner, the rest stays.
    refined = list_json(path, "--filter", "bob-errors", "--owner", "alice", "--age", "all")
    assert [r["id"] for r in refined] == [ids["old"]]
    # The stored form is data in a documented table.
    with open_store(path, read_only=True) as con:
        row = con.execute("SELECT spec FROM saved_filters WHERE name = 'bob-errors'").fetchone()
    assert row is not None and json.loads(row[0]) == {"statuses": ["Error"], "owners": ["bob"]}
    wsjobs(path, "filters", "delete", "bob-errors")
    gone = wsjobs(path, "list", "--no-sync", "--filter", "bob-errors", check=False)
    assert gone.returncode == 4
    assert gone.stderr.strip().startswith("error: no filter named 'bob-errors': use one of")
    assert len(gone.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--status", "nope"], "error: unknown status 'nope': use one of pending"),
        (["x", "--columns", "id,password"], "error: unknown column 'password'"),
        (["x", "--sort", "parameters"], "error: cannot sort by 'parameters'"),
        (["pending", "--status", "error"], "error: cannot save as 'pending': it is a predefined"),
        (["Bad Name", "--status", "error"], "error: bad filter name 'Bad Name'"),
        (["x"], "error: an empty filter"),
        (["x", "--since", "last tuesday"], "error: bad date 'last tuesday'"),
    ],
)
def test_saved_filter_validation(tmp_path: Path, args: list[str], message: str) -> None:
    path = tmp_path / "history.duckdb"
    make_history(path)
    proc = wsjobs(path, "filters", "save", *args, check=False)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.strip().startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    with open_store(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM saved_filters").fetchone() == (0,)


def test_view_set_show_reset(tmp_path: Path) -> None:
    path = tmp_path / "history.duckdb"
    ids = make_history(path)
    view = json.loads(
        wsjobs(
            path,
            "view",
            "set",
            "--columns",
            "owner,info",
            "--sort",
            "owner",
            "--asc",
            "--limit",
            "3",
            "--age",
            "all",
            "--json",
        ).stdout
    )
    assert view == {
        "columns": ["owner", "info"],
        "sort": "owner",
        "desc": False,
        "age": "all",
        "limit": 3,
        "tz": None,
    }
    rows = list_json(path)
    assert [list(r) for r in rows] == [["id", "owner", "info"]] * 3
    assert [r["owner"] for r in rows] == ["alice"] * 3
    assert ids["old"] in {r["id"] for r in list_json(path, "--limit", "0")}  # age all applies
    bad = wsjobs(path, "view", "set", "--sort", "nope", check=False)
    assert bad.returncode == 4 and "cannot sort by 'nope'" in bad.stderr
    reset = json.loads(wsjobs(path, "view", "reset", "--json").stdout)
    assert reset["columns"][:3] == ["id", "action", "info"] and reset["age"] == "today"
    assert json.loads(wsjobs(path, "view", "show", "--json").stdout) == reset
    rows = list_json(path, "--tz", "UTC")
    assert ids["old"] not in {r["id"] for r in rows}
    assert list(rows[0]) == reset["columns"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tz", "Nowhere/City"], "error: unknown time zone 'Nowhere/City'"),
        (["--age", "decade"], "error: unknown age 'decade'"),
        (["--until", "31/12/2026"], "error: bad date '31/12/2026'"),
        (["--filter", "nope"], "error: no filter named 'nope'"),
    ],
)
def test_list_bad_input_is_one_line(
    history: tuple[Path, dict[str, str]], args: list[str], message: str
) -> None:
    path, _ = history
    proc = wsjobs(path, "list", "--no-sync", *args, check=False)
    assert proc.returncode == 4
    assert proc.stderr.strip().startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_rich_table(history: tuple[Path, dict[str, str]]) -> None:
    path, ids = history
    out = wsjobs(path, "list", "--no-sync", "--age", "all", "--tz", "Europe/Paris").stdout
    assert ids["fifty"][:8] in out and ids["fifty"] not in out  # short ids
    assert "devices ok/failed" in out and "Error (failed)" in out
    assert "7 of 7 job(s): all jobs; sorted by run_at descending; times in Europe/Paris" in out


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_list_on_a_really_synced_history(tmp_path: Path) -> None:
    from jobhelpers import run

    tag = f"lv-{uuid.uuid4().hex[:8]}"
    jobs = {
        "ok": run("ok", ["t1"], info=f"{tag} ok"),
        "mixed": run("mixed", ["t1", "t3"], info=f"{tag} mixed"),
        "broken": run("broken", ["t2"], info=f"{tag} broken"),
    }
    path = tmp_path / "history.duckdb"
    # The server stamped these jobs with the real clock, so the CLI's clock is pinned to
    # the newest one and "today"/"this week" are computed for that instant: the same
    # answer whether the jobs ran at noon or straddled midnight.
    pinned = max(job.created for job in jobs.values() if job.created is not None)
    assert jobs["broken"].created == pinned  # ran last
    # Before any sync, `list` answers at once: there is no history yet.
    empty = wsjobs(path, "list", "--json", "--age", "all", "--search", tag, now=pinned, check=False)
    assert empty.returncode != 0 and "run `wsjobs sync` first" in empty.stderr
    # `list --sync` syncs first, in the foreground: the real sync, the real API.
    synced = wsjobs(
        path, "list", "--sync", "--json", "--age", "all", "--search", tag, "--tz", "UTC", now=pinned
    )
    assert "warning:" not in synced.stderr  # just synced: fresh
    rows = json.loads(synced.stdout)
    got = {r["id"]: (r["status"], r["devices_ok"], r["devices_failed"]) for r in rows}
    assert got == {
        jobs["ok"].id: ("Completed", 1, 0),
        jobs["mixed"].id: ("Completed with errors", 1, 1),
        jobs["broken"].id: ("Error", 0, 1),
    }
    assert [r["id"] for r in rows] == [jobs["broken"].id, jobs["mixed"].id, jobs["ok"].id]
    errors = list_json(
        path, "--filter", "errors-this-week", "--search", tag, "--tz", "UTC", now=pinned
    )
    assert [r["id"] for r in errors] == [jobs["broken"].id]
    logs = list_json(path, "--age", "all", "--search-logs", "check failed")
    assert jobs["mixed"].id in {r["id"] for r in logs}
    assert jobs["ok"].id not in {r["id"] for r in logs}
    t3 = json.loads(wsjobs(path, "device", "t3", "--no-sync", "--json", "--search", tag).stdout)
    assert [(r["id"], r["device_status"]) for r in t3] == [
        (jobs["mixed"].id, "Completed with errors")
    ]
    mine = list_json(path, "--filter", "my-jobs-today", "--search", tag, "--tz", "UTC", now=pinned)
    today = windows.age_window("today", tz=UTC, now=pinned)
    # Jobs default to the OS user as owner; all three unless they straddled UTC midnight.
    expected = {j.id for j in jobs.values() if j.created is not None and today.contains(j.created)}
    assert {r["id"] for r in mine} == expected and jobs["broken"].id in expected
    exported = tmp_path / "synced.csv"
    wsjobs(path, "export", "--no-sync", "--age", "all", "--search", tag, "--out", str(exported))
    with duckdb.connect() as con:
        ids = [r[0] for r in con.execute(f"SELECT id FROM read_csv('{exported}')").fetchall()]
    assert ids == [r["id"] for r in rows]
