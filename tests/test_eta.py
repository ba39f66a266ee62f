"""The ETA: medians per device and step from the history, a fallback, and no estimate
without enough history. Real DuckDB file, pinned clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from workspaces_jobs.eta import describe, estimate_job, history_durations
from workspaces_jobs.jobfacts import DeviceFact, JobFact, StepFact
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.synthetic import add_jobs

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def _history(path: Path) -> None:
    past = []
    for n, (device, secs) in enumerate([("d1", 10), ("d1", 20), ("d1", 30), ("d2", 100)]):
        start = NOW - timedelta(days=1, minutes=n)
        past.append(
            {
                "action": "patch",
                "status": "Completed",
                "created": start,
                "started": start,
                "ended": start + timedelta(seconds=secs),
                "devices": [{"device": device, "steps": [{"step": "s1"}]}],
            }
        )
    with open_store(path) as con:
        add_jobs(con, past)


def _running(action: str = "patch", status: str = "In progress") -> JobFact:
    job = JobFact(
        "run1", "", action, "", "", status, None, None, None, None,
        NOW - timedelta(seconds=5), NOW - timedelta(seconds=5), None, None, 10.0, None,
        {}, [], None, None, None,
    )  # fmt: skip
    job.devices = [
        DeviceFact("run1", "d1", "In progress", 0, 0, NOW - timedelta(seconds=5), None),
        DeviceFact("run1", "d2", "Pending", 0, 0, None, None),
    ]
    job.steps = [
        StepFact(
            "t1",
            "run1",
            "d1",
            "s1",
            None,
            True,
            "Running",
            "Running",
            None,
            None,
            NOW - timedelta(seconds=5),
            None,
        ),  # fmt: skip
    ]
    return job


def test_medians_per_device_and_step_with_a_fallback(tmp_path: Path) -> None:
    _history(tmp_path / "h.duckdb")
    with open_store(tmp_path / "h.duckdb") as con:
        stats = history_durations(con, "patch")
    assert stats.per_device == {("d1", "s1"): 20.0}  # d2 has 1 run: below MIN_SAMPLES
    assert stats.per_step == {"s1": 25.0} and stats.order == ("s1",)
    found = estimate_job(_running(), stats, now=NOW, parallel=16)
    assert found is not None
    # d1: 20 - 5 s already run = 15; d2 (not started): 25 from the step's median.
    assert found.seconds == 25.0 and found.fallback == 1 and found.devices == 2
    text = describe(found)
    assert text is not None and text.startswith("about 25 s left (median of the last 20 runs")
    # Two devices at a time → one: the total counts (15 + 25).
    one = estimate_job(_running(), stats, now=NOW, parallel=1)
    assert one is not None and one.seconds == 40.0


def test_no_estimate_without_history_or_when_not_running(tmp_path: Path) -> None:
    _history(tmp_path / "h.duckdb")
    with open_store(tmp_path / "h.duckdb") as con:
        other = history_durations(con, "other")
        stats = history_durations(con, "patch")
    assert estimate_job(_running("other"), other, now=NOW, parallel=16) is None
    assert estimate_job(_running(status="Completed"), stats, now=NOW, parallel=16) is None
    assert describe(None) is None
