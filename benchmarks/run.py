"""Run all four benchmarks and print one table of figures, ratios and targets.

Usage::

    python benchmarks/run.py --quick     # ~1,000 jobs / 100k-row history; a few minutes
    python benchmarks/run.py             # full: 10,000 jobs to sync, 1M jobs / 10M log lines
    python benchmarks/run.py --only sync,queries

The sync and overhead benchmarks each start a dedicated Prefect server (temporary home,
free port, stopped at the end; the sync's on a copy of its cached seeded database). The
export benchmark reuses the query benchmark's synthetic history. Each benchmark also runs alone:
``python benchmarks/<name>.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export  # noqa: E402
import overhead  # noqa: E402
import queries  # noqa: E402
import sync  # noqa: E402
from _common import Row, print_table  # noqa: E402

ORDER = ("overhead", "sync", "queries", "export")


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, {cpu}, {mem_kb / 1024 / 1024:.0f} GB RAM, "
        f"Python {platform.python_version()}, load average {load}"
    )


def calibration() -> float:
    """Seconds for 3M Python additions: 0.10 s on the README's machine when idle, 0.6-1.0 s
    while other helpers' tests ran. Shows how much other work slowed this run down."""
    start = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick sizes of every benchmark")
    parser.add_argument("--only", default=",".join(ORDER), help="comma-separated subset")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(ORDER)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(sorted(unknown))}: use {ORDER}")
    flag = ["--quick"] if args.quick else []

    print(f"machine: {machine()}")
    calib = calibration()
    print(
        f"calibration: 3M Python additions in {calib:.2f} s "
        "(0.10 s on the README machine when idle)\n"
    )
    started = time.perf_counter()
    rows: dict[str, list[Row]] = {}
    if "sync" in chosen:  # its own server, started on the seeded database
        rows["sync"] = sync.main(flag)
        print()
    if "overhead" in chosen:
        rows["overhead"] = overhead.main(flag)
        print()
    if "queries" in chosen:
        rows["queries"] = queries.main(flag)
        print()
    if "export" in chosen:
        extra = ["--history", str(queries.LAST_HISTORY)] if queries.LAST_HISTORY else []
        rows["export"] = export.main(flag + extra)
        print()
    print(
        f"all benchmarks ({'quick' if args.quick else 'full'} mode) in "
        f"{time.perf_counter() - started:.0f} s; calibration {calib:.2f} s\n"
    )
    print_table([r for name in ORDER for r in rows.get(name, [])])


if __name__ == "__main__":
    main()
