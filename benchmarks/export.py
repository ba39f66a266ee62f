"""Benchmark 4: export speed and memory, through the real export code.

Exports ``JobQuery(age="all", limit=ROWS).export(fmt, path)`` — the code behind
``wsjobs export`` — with the list view's default columns (device ok/failed counts
included) from a synthetic history (see ``queries.py``), 100k rows quick / 1M full, to
CSV, Parquet, JSON, XLSX and HTML. Each export runs in a fresh subprocess so its peak
RSS (``VmHWM``) is its own; the time is measured inside it, around the export call only,
as wall time and as the process's CPU time (on a busy machine the wall time of
single-threaded XLSX/HTML writing is mostly waiting for a core). A baseline process that
opens the history and plans the query without exporting shows what the interpreter and
DuckDB take anyway, and XLSX also runs at a tenth of the rows: equal peaks mean memory
does not grow with the rows.

Usage: ``python benchmarks/export.py [--quick] [--rows N] [--history FILE] [--formats csv,...]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, row, scratch  # noqa: E402

FORMATS = ("csv", "parquet", "json", "xlsx", "html")
TARGETS = {"csv": 1_000_000, "parquet": 1_000_000, "xlsx": 10_000, "html": 30_000}


def peak_rss_kb() -> int:
    """This process's peak RSS. ``VmHWM`` rather than ``getrusage``: ``ru_maxrss`` keeps
    the parent's peak across fork/exec, which would hide the export's own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child(history: Path, fmt: str, rows: int, out: Path) -> None:
    """Runs in the subprocess: one export, then print seconds, rows and peak RSS."""
    from workspaces_jobs.reporting.query import JobQuery
    from workspaces_jobs.reporting.store import open_store

    with open_store(history, read_only=True) as con:
        query = JobQuery(con=con, age="all", limit=rows, tz="Europe/Paris")
        start = time.perf_counter()
        cpu = time.process_time()
        if fmt == "none":
            query.plan(con, for_export=True)
            written = 0
        else:
            written = query.export(fmt, out / f"jobs.{fmt}").rows
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    peak_kb = peak_rss_kb()
    size = (out / f"jobs.{fmt}").stat().st_size if fmt != "none" else 0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "rows": written,
                "rss_mb": peak_kb / 1024,
                "bytes": size,
            }
        )
    )


def run_child(history: Path, fmt: str, rows: int, out: Path) -> dict[str, float]:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            fmt,
            "--rows",
            str(rows),
            "--history",
            str(history),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"export {fmt} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows instead of 1M")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--history", type=Path, default=None, help="an existing history file")
    parser.add_argument(
        "--formats", default=",".join(FORMATS), help="comma list, e.g. csv,parquet (default all)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    if args.child:
        child(args.history, args.child, rows, args.out)
        return []

    history = args.history
    if history is None:
        from queries import build

        history = scratch("export") / "history.duckdb"
        start = time.perf_counter()
        build(history, rows)
        print(f"synthetic history of {rows:,} jobs in {time.perf_counter() - start:.1f} s")
    out = scratch("export-out")

    base = run_child(history, "none", rows, out)
    chosen = [f for f in args.formats.split(",") if f in FORMATS]
    results = {fmt: run_child(history, fmt, rows, out) for fmt in chosen}
    small = run_child(history, "xlsx", rows // 10, out) if "xlsx" in chosen else None

    print(f"export ({rows:,} rows, default list columns; fresh process per export)")
    print(f"  baseline (open + plan, no export)   peak RSS {base['rss_mb']:6.0f} MB")
    out_rows: list[Row] = []
    for fmt, r in results.items():
        rate = r["rows"] / r["seconds"]
        goal = TARGETS.get(fmt)
        note = f"  (target >= {goal:,} rows/s)" if goal else ""
        print(
            f"  {fmt:8s} {r['seconds']:7.2f} s  {rate:12,.0f} rows/s  "
            f"({r['rows'] / r['cpu']:10,.0f} per CPU-second)  peak RSS "
            f"{r['rss_mb']:6.0f} MB  {r['bytes'] / 1e6:7.1f} MB file{note}"
        )
        if r["rows"] != rows:
            raise SystemExit(f"{fmt} wrote {r['rows']} rows, not {rows}")
        if goal:
            out_rows.append(row("4 export", f"{fmt} rows/s", rate, "rows/s", ">=", goal))
        else:
            out_rows.append(row("4 export", f"{fmt} rows/s", rate, "rows/s"))
        if fmt in ("xlsx", "html"):  # single-threaded Python: CPU time = time on an idle core
            out_rows.append(
                row("4 export", f"{fmt} rows per CPU-second", r["rows"] / r["cpu"], "rows/s")
            )
    out_rows.append(row("4 export", "baseline peak RSS (open + plan)", base["rss_mb"], "MB"))
    if small is not None:
        print(
            f"  xlsx at {rows // 10:,} rows: peak RSS {small['rss_mb']:.0f} MB "
            f"(at {rows:,}: {results['xlsx']['rss_mb']:.0f} MB; baseline {base['rss_mb']:.0f} MB)"
        )
        out_rows += [
            row("4 export", f"xlsx peak RSS, {rows:,} rows", results["xlsx"]["rss_mb"], "MB"),
            row("4 export", f"xlsx peak RSS, {rows // 10:,} rows", small["rss_mb"], "MB"),
        ]
    sys.stdout.flush()
    return out_rows


if __name__ == "__main__":
    main()
