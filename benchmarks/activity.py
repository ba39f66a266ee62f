"""Benchmark: what recording one activity row costs an acting command (issue 18).

``activity.record`` is one short write transaction of its own beside the sync (see
``workspaces_jobs/activity.py``). This measures, on a fresh DuckLake history in a
temporary ``WSJOBS_HOME`` (no Prefect server needed):

* **fresh process**: a new Python process that imports the module, opens the history,
  inserts one row and exits — what ``wsjobs cancel`` pays on top of its own work (median
  of N processes), next to the same process doing only the import (its baseline);
* **in process**: ``record()`` again and again in one process (the web view and the API,
  which keep the process), median ms per row;
* **beside a writer**: the same while another process inserts rows as fast as it can
  (the sync's situation), counting rows lost (must be 0).

Usage: ``python benchmarks/activity.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, row  # noqa: E402

RECORD = (
    "from workspaces_jobs.activity import record; "
    "assert record('bench', 'cancel', job_id='j', source='cli')"
)
IMPORT = "import workspaces_jobs.activity, workspaces_jobs.reporting.store"
WRITER = (
    "import sys, time\n"
    "from workspaces_jobs.activity import record\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    assert record('writer', 'kill', job_id='w', source='cli')\n"
)


def _timed(code: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one child process: on a loaded
    machine the CPU figure is the one to compare."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 processes, 50 rows")
    args = parser.parse_args(argv)
    procs, rows_n = (3, 10) if args.quick else (15, 300)
    home = tempfile.mkdtemp(prefix="wsjobs-bench-activity-")
    env = dict(os.environ, WSJOBS_HOME=home)
    os.environ["WSJOBS_HOME"] = home
    subprocess.run([sys.executable, "-c", RECORD], env=env, check=True)  # create + migrate
    bases = [_timed(IMPORT, env) for _ in range(procs)]
    freshes = [_timed(RECORD, env) for _ in range(procs)]
    base, base_cpu = (statistics.median(x) for x in zip(*bases, strict=True))
    fresh, fresh_cpu = (statistics.median(x) for x in zip(*freshes, strict=True))
    print(f"fresh process: import only {base:.2f} s ({base_cpu:.2f} s CPU), import + record"
          f" {fresh:.2f} s ({fresh_cpu:.2f} s CPU) -> one row costs {fresh - base:.2f} s"
          f" ({fresh_cpu - base_cpu:.2f} s CPU)")  # fmt: skip

    from workspaces_jobs import activity
    from workspaces_jobs.reporting.store import open_store

    times = []
    for _ in range(rows_n):
        t = time.perf_counter()
        assert activity.record("bench", "note", job_id="k", source="api")
        times.append(time.perf_counter() - t)
    warm = statistics.median(times) * 1000
    print(f"in process: {warm:.1f} ms per row (median of {rows_n})")

    seconds = 5.0 if args.quick else 30.0
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(seconds)], env=env)
    beside, done, failed = [], 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        ok = activity.record("bench", "cancel", job_id="b", source="cli")
        beside.append(time.perf_counter() - t)
        done += ok
        failed += not ok
    try:
        writer_ok = writer.wait(timeout=seconds + 60) == 0
    except subprocess.TimeoutExpired:  # seen under load: the writer spun, never finishing
        writer.kill()
        writer.wait()
        writer_ok = False
        print(
            f"beside a writer: the writer had not finished {seconds + 60:g} s after its end: killed"
        )
    with open_store(read_only=True) as con:
        stored = con.cursor().execute("SELECT count(*) FROM activity WHERE job_id = 'b'").fetchone()
    lost = done - int(stored[0] if stored else 0)
    p95 = sorted(beside)[int(len(beside) * 0.95) - 1] * 1000 if beside else 0.0
    print(f"beside a writer: {done} rows, {failed} failed, {lost} lost, p95 {p95:.1f} ms")
    return [
        row("activity", "fresh process, one row (over import)", fresh - base, "s"),
        row("activity", "fresh process, one row (over import), CPU", fresh_cpu - base_cpu, "s"),
        row("activity", "fresh process, import + row", fresh, "s"),
        row("activity", "in process, per row", warm, "ms"),
        row("activity", "beside a writer, p95", p95, "ms"),
        row("activity", "beside a writer, failed + lost", failed + lost, "rows", "<=", 0),
        row("activity", "beside a writer, writer finished", float(writer_ok), "yes", ">=", 1),
    ]


if __name__ == "__main__":
    main()
