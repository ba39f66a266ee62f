"""Rule matching (pure): the Python check a job's process runs must mean what the list's
SQL means. Each spec is run both ways over the same jobs in a real DuckDB history."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from workspaces_jobs.notify.rules import Rule, matches, matching_rules
from workspaces_jobs.reporting.filters import FilterSpec, build_where
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.synthetic import add_jobs
from workspaces_jobs.reporting.windows import resolve_zone

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday
TZ = resolve_zone("Europe/Paris")


def _jobs() -> list[dict[str, Any]]:
    day = timedelta(days=1)
    described = [
        dict(status="Error", action="patch", owner="bob", info="lab 50% done", devices=["d1"]),
        dict(status="Completed", action="patch", owner="alice", devices=["d2"], recovered=True),
        dict(status="Completed with errors", action="scan", owner="bob", devices=["d1", "d3"]),
        dict(status="Canceled by the user", action="scan", owner="carol", created=NOW - 9 * day),
        dict(status="Error", action="patch", owner="alice", created=NOW - 40 * day,
             parameters={"package": "openssl"}, devices=["d3"]),
    ]  # fmt: skip
    for i, values in enumerate(described):
        created = values.setdefault("created", NOW - timedelta(hours=2 + i))
        values["started"] = created + timedelta(seconds=3)
    return described


SPECS = [
    FilterSpec(age="all", statuses=("Error",)),
    FilterSpec(age="all", statuses=("Error", "Completed with errors"), owners=("bob",)),
    FilterSpec(age="week", statuses=("Error",)),
    FilterSpec(age="today"),
    FilterSpec(age="month", actions=("scan",)),
    FilterSpec(age="all", devices=("d3",)),
    FilterSpec(age="all", search="50%"),
    FilterSpec(age="all", search="OPENSSL"),
    FilterSpec(age="all", owners=("@me",)),
    FilterSpec(age="all", recovered="yes"),
    FilterSpec(age="all", recovered="no", statuses=("Completed",)),
    FilterSpec(since="2026-11-10", until="2026-11-18"),
    FilterSpec(age="all", started_over="3h"),
]


def _fact(row: dict[str, Any], devices: list[str]) -> Any:
    values = {k: v for k, v in row.items() if k not in ("synced", "devices", "recovered")}
    return SimpleNamespace(
        **values,
        devices=[SimpleNamespace(device=d) for d in devices],
        recovered=bool(row.get("recovered")),
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = Path(tmp_path_factory.mktemp("rules")) / "h.duckdb"
    with open_store(path) as con:
        add_jobs(con, _jobs())
        cur = con.execute("SELECT * FROM jobs")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        for row in rows:  # as a job fact has them: parsed, not JSON text
            row["parameters"] = json.loads(row["parameters"] or "{}")
        yield con, rows


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: json.dumps(s.to_json()))
def test_python_match_equals_the_sql_filter(history: Any, spec: FilterSpec) -> None:
    con, rows = history
    spec = spec.validated()
    where = build_where(spec, tz=TZ, now=NOW, default_age="all", user=lambda: "alice")
    query = f"SELECT j.id FROM jobs j WHERE {where.sql}"
    sql_ids = {r[0] for r in con.execute(query, where.params).fetchall()}
    devices: dict[str, list[str]] = {r["id"]: [] for r in rows}
    for job_id, device in con.execute("SELECT job_id, device FROM job_devices").fetchall():
        devices[job_id].append(device)
    facts = [_fact(r, devices[r["id"]]) for r in rows]
    py_ids = {f.id for f in facts if matches(spec, f, now=NOW, tz=TZ, creator="alice")}
    assert py_ids == sql_ids
    assert sql_ids or spec.recovered == "no"  # every spec but one selects something


def test_paused_rules_and_unparsable_copies_match_nothing() -> None:
    job = SimpleNamespace(status="Error", created=NOW, owner="bob", action="x", devices=[],
                          recovered=False, started=NOW)  # fmt: skip
    spec = {"statuses": ["Error"], "age": "all"}
    active = Rule("a", "f", spec, "d")
    paused = Rule("p", "f", spec, "d", paused=True)
    broken = Rule("b", "f", {"statuses": ["Nope"]}, "d")
    assert [r.name for r in matching_rules([active, paused, broken], job, now=NOW)] == ["a"]
