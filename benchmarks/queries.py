"""Benchmark 3: list-view query latency over a large synthetic history.

A synthetic history (``reporting.synthetic.generate``: the real schema, Arrow batches) of
100k jobs / 1M log lines (quick) or 1M jobs / 10M log lines (full), created evenly over
the last 2 years: 2 devices per job out of a fleet of 200, 1 step per device, 5 log
lines per step. Then, through the list view's real code path — ``JobQuery(...).plan(con)``,
``page_and_total`` (exactly what ``wsjobs list`` and
``wsjobs device`` run) — on a read-only connection, each repeated and timed:

* window + status, top 50: ``--age week|month|quarter|year --status error`` (rotated);
* search over any column, whole history: ``--age all --search CHG00042``;
* log search, whole history: ``--age all --search-logs "permission denied"``, and the
  same within this quarter (log lines are cut to the window before matching);
* device history: ``wsjobs device devNNNN`` (rotated over the fleet), top 50;
* group-by per day: an SQL audit over ``jobs`` (jobs per day and status over the 2 years,
  in the user's time zone) — there is no product screen for it, so it is plain SQL.

Usage: ``python benchmarks/queries.py [--quick] [--jobs N] [--repeat R] [--history FILE]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, median, percentile, row, scratch  # noqa: E402

TZ = "Europe/Paris"
#: The history file of the last run (``run.py`` hands it to the export benchmark).
LAST_HISTORY: Path | None = None
PER_DAY_SQL = """
SELECT date_trunc('day', j.created AT TIME ZONE $tz) AS day, j.status, count(*) AS jobs
FROM jobs j
GROUP BY ALL
ORDER BY day, j.status
"""


def list_view(con: Any, **fields: Any) -> tuple[int, int]:
    """What ``wsjobs list``/``wsjobs device`` do after the sync: a page, and the total."""
    from workspaces_jobs.reporting.query import JobQuery, page_and_total
    from workspaces_jobs.reporting.store import snapshot

    with snapshot(con) as one:  # as `wsjobs list` reads: one transaction
        plan = JobQuery(con=one, tz=TZ, **fields).plan(one)
        rows, total = page_and_total(one, plan)  # one logs scan for page + total (#20)
    return len(rows), total


def per_day(con: Any) -> tuple[int, int]:
    rows = con.cursor().execute(PER_DAY_SQL, {"tz": TZ}).fetchall()
    return len(rows), sum(r[2] for r in rows)


def build(path: Path, jobs: int) -> dict[str, int]:
    from workspaces_jobs.reporting.store import open_store
    from workspaces_jobs.reporting.synthetic import Shape, generate

    shape = Shape(
        jobs=jobs, devices_per_job=2, steps_per_device=1, logs_per_step=5, fleet=200, days=730
    )
    with open_store(path) as con:
        return generate(con, shape, end=datetime.now(UTC))


def timed(fn: Callable[[], tuple[int, int]], repeat: int) -> tuple[list[float], tuple[int, int]]:
    fn()  # warm-up: first touch of the file's blocks
    times = []
    out = (0, 0)
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k jobs instead of 1M")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per query")
    parser.add_argument(
        "--history", type=Path, default=None, help="reuse a history this script generated"
    )
    args = parser.parse_args(argv)
    n = args.jobs or (100_000 if args.quick else 1_000_000)
    repeat = args.repeat or (8 if args.quick else 10)

    from workspaces_jobs.reporting.store import open_store

    global LAST_HISTORY
    start = time.perf_counter()
    if args.history:
        path = args.history
        with open_store(path, read_only=True) as con:
            counts = {
                t: int(con.cursor().execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
                for t in ("jobs", "logs", "job_devices")
            }
        n = counts["jobs"]
    else:
        path = scratch("queries") / "history.duckdb"
        counts = build(path, n)
    LAST_HISTORY = path
    built = time.perf_counter() - start
    size_mb = path.stat().st_size / 1e6
    print(
        f"synthetic history: {counts['jobs']:,} jobs, {counts['logs']:,} log lines, "
        f"{counts['job_devices']:,} device rows over 730 days in {built:.1f} s "
        f"({size_mb:,.0f} MB)",
        flush=True,
    )

    windows = iter(["week", "month", "quarter", "year"] * repeat)
    devices = iter(f"dev{(37 * i) % 200:04d}" for i in range(repeat + 1))
    results: dict[str, tuple[list[float], tuple[int, int]]] = {}
    with open_store(path, read_only=True) as con:
        cases: dict[str, Callable[[], tuple[int, int]]] = {
            "window+status top-50": lambda: list_view(
                con, age=next(windows), status="error", limit=50
            ),
            "column search (all time)": lambda: list_view(
                con, age="all", search="CHG00042", limit=50
            ),
            "log search (all time)": lambda: list_view(
                con, age="all", search_logs="permission denied", limit=50
            ),
            "log search (this quarter)": lambda: list_view(
                con, age="quarter", search_logs="permission denied", limit=50
            ),
            "device history top-50": lambda: list_view(con, history_of=next(devices), limit=50),
            "group-by per day (2 years)": lambda: per_day(con),
        }
        for name, fn in cases.items():
            results[name] = timed(fn, repeat)

    targets = {
        "window+status top-50": 50.0,
        "column search (all time)": 300.0,
        "log search (all time)": 700.0,
    }
    print(f"queries ({n:,} jobs, {counts['logs']:,} log lines; {repeat} runs each, ms)")
    out: list[Row] = []
    for name, (times, (shown, total)) in results.items():
        p50 = 1000 * median(times)
        p95 = 1000 * percentile(times, 95)
        goal = targets.get(name)
        note = f"  (target p50 < {goal:g} ms)" if goal else ""
        print(f"  {name:28s} p50 {p50:8.1f}  p95 {p95:8.1f}   {shown} rows of {total:,}{note}")
        if goal:
            out.append(row("3 queries", f"{name} p50", p50, "ms", "<", goal))
        else:
            out.append(row("3 queries", f"{name} p50", p50, "ms"))
        out.append(row("3 queries", f"{name} p95", p95, "ms"))
    sys.stdout.flush()
    return out


if __name__ == "__main__":
    main()
