"""The sync parses log lines in SQL (reporting/sql/parse_logs.sql); ``wsjobs show`` parses
them in Python (runmeta.parse_log_message). Both must say the same of every line."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workspaces_jobs import runmeta
from workspaces_jobs.jobfacts import StepFact
from workspaces_jobs.reporting import rows as R
from workspaces_jobs.reporting.store import open_store

#: Every character Python's ``\s`` matches in a str (RE2's ``\s`` knows only ASCII ones).
SPACES = [chr(c) for c in range(0x3001) if re.match(r"\s", chr(c))]

MESSAGES = [
    "dev1 s1 out | hello",
    "dev1 s1 err | ",
    "dev1 s1 sys | two\nlines\n",
    "dev1 s1 bad | not a stream",
    "dev1  s1 out | two spaces",
    " dev1 s1 out | leading space",
    "dév-ü s.1 out | ünïcode",
    "dev1 s1 out |no space after the bar",
    "d s out | a | b",
    "no tags at all",
    "",
    *(f"a{c}b s1 out | x" for c in [*SPACES, "\x00", "\x1b", "\u200b", "\ufeff"]),
    *(f"dev s{c} err | y" for c in SPACES),
]


def _step(step_id: str, device: str, name: str) -> StepFact:
    return StepFact(
        id=step_id,
        job_id="job-1",
        device=device,
        step=name,
        position=1,
        critical=True,
        status="Completed",
        state_name="Completed",
        exit_code=0,
        message=None,
        started=None,
        ended=None,
    )


@pytest.mark.parametrize("new", [True, False])
def test_sql_parses_each_line_as_show_does(tmp_path: Path, new: bool) -> None:
    start = datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)
    n = len(MESSAGES)
    lines = R.raw_logs(
        [
            [f"log-{i}" for i in range(n)],
            ["job-1"] * n,
            ["task-1" if i % 2 else None for i in range(n)],  # half of them from a step
            [(10, 20, 30, 40, 50, 25)[i % 6] for i in range(n)],
            MESSAGES,
            [(start + timedelta(microseconds=i)).isoformat() for i in range(n)],
        ]
    )
    steps = R.step_names([_step("task-1", "from-task", "s9")])
    with open_store(tmp_path / "h.ducklake") as con:
        cur = con.cursor()
        assert R.insert_logs(cur, lines, steps, new=new) == {"job-1": n}
        assert R.insert_logs(cur, lines, steps) == {}  # known ids are not added again
        got = {
            r[0]: r[1:]
            for r in cur.execute(
                "SELECT id, device, step, stream, message, level, ts FROM logs"
            ).fetchall()
        }
    levels = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL", 25: "25"}
    for i, message in enumerate(MESSAGES):
        line = runmeta.parse_log_message(message)
        from_task = i % 2 == 1
        expected = (
            line.device or ("from-task" if from_task else None),
            line.step or ("s9" if from_task else None),
            line.stream,
            line.text,
            levels[(10, 20, 30, 40, 50, 25)[i % 6]],
            start + timedelta(microseconds=i),
        )
        assert got[f"log-{i}"] == expected, repr(message)


def test_times_of_both_readers_are_the_same_instant() -> None:
    """The API's times carry an offset, Prefect's SQLite stores naive UTC text."""
    api = R.raw_logs_from_json(
        [
            {
                "id": "a",
                "flow_run_id": "j",
                "task_run_id": None,
                "level": 20,
                "message": "m",
                "timestamp": "2026-12-01T23:59:59.5+00:00",
            },
            {
                "id": "b",
                "flow_run_id": "j",
                "level": 20,
                "message": "m",
                "timestamp": "2026-12-02T01:00:00+01:00",
            },
        ]
    )
    stored = R.raw_logs(
        [["a", "b"], ["j", "j"], [None, None], [20, 20], ["m", "m"],
         ["2026-12-01 23:59:59.500000", "2026-12-02 00:00:00"]],
        naive_utc=True,
    )  # fmt: skip
    assert api.column("ts").to_pylist() == stored.column("ts").to_pylist()
    assert api.column("ts").to_pylist()[1] == datetime(2026, 12, 2, tzinfo=UTC)
