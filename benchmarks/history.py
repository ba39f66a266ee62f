"""Benchmark: the DuckLake history side by side with the old single DuckDB file (#17, #20).

One run, the same synthetic data (``reporting.synthetic``: 2 devices x 1 step x 5 log
lines per job over 2 years, as ``queries.py``) written into two stores:

* ``lake`` — the history as it is now (``reporting.store.open_store``: a DuckLake with an
  SQLite catalog), maintained as the sync leaves it (``store.maintain``);
* ``file`` — the store before #17: one DuckDB file with the same migrations.

Then, for each store:

1. **sync write throughput**: the sync's own write path (``reporting.rows``: upsert of
   jobs/steps/devices, device counts, insert of new log lines, one transaction per batch,
   one DuckDB thread, as ``reporting.sync`` writes) for ``--batches`` batches of
   ``--batch-jobs`` jobs each (3 devices x 3 steps x 10 lines per job, the shape of
   ``benchmarks/sync.py``), into the big history: rows per second, wall and CPU;
2. **queries**: the list view's code path (``JobQuery`` + ``page_and_total`` in one read
   transaction, exactly ``wsjobs list``/``device``), p50/p95 wall and p50 CPU per query,
   the stores interleaved run by run; a third column, ``before``, runs the old file with
   the list code of e104b3c (:func:`before_page_and_total`): #17's "today's file". The
   figures that count are the lake/before CPU ratios (#17: within 1.5x) and the log
   search's wall time (< 700 ms);
3. **CSV export** (lake only, #20: >= 1M rows/s at 1M rows): ``export.py``'s child, a
   fresh process, formula cells neutralised as ``wsjobs export`` does.

The machine's load average is printed first and last: wall times on a shared 2-core host
mean little above a load of ~2; CPU times and ratios are steadier.

Usage: ``python benchmarks/history.py [--quick] [--jobs N] [--keep DIR] [--repeat R]``
(``--keep DIR`` builds into DIR once and reuses it on the next run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, median, percentile, row, scratch  # noqa: E402

TZ = "Europe/Paris"
END = datetime(2026, 11, 30, tzinfo=UTC)  # the data's last day; windows see "now" as END


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- building ------------------------------------------------------------------------------


def _shape(jobs: int) -> Any:
    from workspaces_jobs.reporting.synthetic import Shape

    return Shape(
        jobs=jobs, devices_per_job=2, steps_per_device=1, logs_per_step=5, fleet=200, days=730
    )


def build_lake(path: Path, jobs: int) -> float:
    from workspaces_jobs.reporting import store
    from workspaces_jobs.reporting.synthetic import generate

    start = time.perf_counter()
    with store.open_store(path) as con:
        generate(con, _shape(jobs), end=END)
        store.maintain(con, now=END + timedelta(days=1))
    return time.perf_counter() - start


def open_file(path: Path, *, read_only: bool = False) -> Any:
    """The pre-#17 store: one DuckDB file, the same migrations."""
    import duckdb

    from workspaces_jobs.reporting import store

    con = duckdb.connect(str(path), read_only=read_only)
    if not read_only and store.schema_version(con) == 0:
        store.migrate(con)
    return con


def build_file(path: Path, jobs: int) -> float:
    from workspaces_jobs.reporting.synthetic import generate

    start = time.perf_counter()
    con = open_file(path)
    try:
        generate(con, _shape(jobs), end=END)
    finally:
        con.close()
    return time.perf_counter() - start


# -- 1. the sync's write path --------------------------------------------------------------


def sync_batches(batches: int, per_batch: int) -> list[dict[str, list[dict[str, Any]]]]:
    """Batches shaped as a sync pass writes them: new jobs of 3 devices x 3 steps with
    10 log lines per step, ids unlike any in the synthetic history."""
    import uuid

    made: list[dict[str, list[dict[str, Any]]]] = []
    base = END - timedelta(hours=2)
    for b in range(batches):
        out: dict[str, list[dict[str, Any]]] = {
            k: [] for k in ("jobs", "steps", "job_devices", "logs", "sync_jobs")
        }
        for j in range(per_batch):
            created = base + timedelta(seconds=b * per_batch + j)
            job_id = str(uuid.uuid4())
            out["jobs"].append(
                {
                    "id": job_id, "name": f"bench-{b}-{j}", "action": "patch",
                    "info": "change CHG00001: update package openssl", "owner": "user01",
                    "status": "Completed", "prefect_state_type": "COMPLETED",
                    "prefect_state_name": "Completed", "created": created,
                    "started": created, "ended": created + timedelta(seconds=30),
                    "expected_start": created, "progress": 100.0, "parameters": "{}",
                    "tags": ["workspaces"], "updated": created, "synced": created,
                    "recovered": False,
                }
            )  # fmt: skip
            out["sync_jobs"].append(
                {"job_id": job_id, "api_updated": created, "fingerprint": "x", "settled": True,
                 "last_log_ts": created}
            )  # fmt: skip
            for d in range(3):
                device = f"dev{(b * per_batch + j + d) % 200:04d}"
                out["job_devices"].append(
                    {"job_id": job_id, "device": device, "status": "Completed", "steps_ok": 3,
                     "steps_failed": 0, "started": created, "ended": created}
                )  # fmt: skip
                for s in range(3):
                    step_id = str(uuid.uuid4())
                    out["steps"].append(
                        {"id": step_id, "job_id": job_id, "device": device, "step": f"step{s}",
                         "position": s + 1, "critical": True, "status": "Completed",
                         "state_name": "Completed", "exit_code": 0, "message": None,
                         "started": created, "ended": created}
                    )  # fmt: skip
                    for n in range(10):
                        out["logs"].append(
                            {"id": str(uuid.uuid4()), "job_id": job_id, "step_id": step_id,
                             "device": device, "step": f"step{s}",
                             "ts": created + timedelta(milliseconds=100 * (s * 10 + n)),
                             "level": "INFO", "stream": "out",
                             "message": f"line {n} of step {s} on {device}"}
                        )  # fmt: skip
        made.append(out)
    return made


def write_batches(con: Any, batches: list[dict[str, list[dict[str, Any]]]]) -> dict[str, float]:
    """``reporting.sync._Pass._write`` for each batch (the same calls, in the same order)."""
    from workspaces_jobs.reporting import rows as R

    cur = con.cursor()
    threads = cur.execute("SELECT current_setting('threads')").fetchone()[0]
    cur.execute("SET threads = 1")  # as the sync writes (reporting.sync._one_thread)
    written = 0
    start, cpu = time.perf_counter(), time.process_time()
    try:
        for batch in batches:
            cur.execute("BEGIN TRANSACTION")
            try:
                written += R.upsert(cur, "jobs", R.to_arrow("jobs", batch["jobs"]))
                written += R.upsert(cur, "steps", R.to_arrow("steps", batch["steps"]))
                devices = R.to_arrow("job_devices", batch["job_devices"])
                written += R.upsert(cur, "job_devices", devices)
                R.refresh_device_counts(cur, sorted({j["id"] for j in batch["jobs"]}))
                written += len(R.insert_new(cur, "logs", R.to_arrow("logs", batch["logs"])))
                seen = R.to_arrow("sync_jobs", batch["sync_jobs"])
                written += R.upsert(cur, "sync_jobs", seen)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
    finally:
        cur.execute(f"SET threads = {int(threads)}")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"rows": written, "seconds": seconds, "cpu": cpu}


# -- 2. queries ----------------------------------------------------------------------------


def before_page_and_total(con: Any, plan: Any) -> tuple[list[dict[str, Any]], int]:
    """``page_and_total`` as it was before this change (main at e104b3c), for the
    ``before`` column: the page's ids, then their columns, then a count -- or, for a
    log search, ids with ``count(*) OVER ()`` then columns -- with the log search as
    ``ILIKE``. Kept here, not in the product, so the ratio to today's file is measured
    in the same run."""
    from workspaces_jobs.reporting.fields import DEVICE_AGGREGATES, contains_pattern, ilike
    from workspaces_jobs.reporting.query import _fetch_dicts

    params = dict(plan.params)
    where = plan.where.sql
    text = plan.spec.search_logs
    if text is not None:
        where = where.replace(
            "contains(lower(l.message), lower($search_logs))",
            ilike("l.message", "search_logs", text),
        )
        params["search_logs"] = contains_pattern(text)
    source = plan.source
    if plan.sort_column.aggregate:
        source += f" LEFT JOIN ({DEVICE_AGGREGATES} GROUP BY d.job_id) da ON da.job_id = j.id"
    counted = ", count(*) OVER ()" if text is not None else ""
    ids_sql = (
        f"SELECT j.id{counted} FROM {source} WHERE {where} "
        f"ORDER BY {plan.order} LIMIT {int(plan.limit)}"
    )
    found = con.cursor().execute(ids_sql, params).fetchall()
    ids = [r[0] for r in found]
    rows = []
    if ids:
        page = {**plan.params_for_source, "page_ids": ids}
        by_id = {r["id"]: r for r in _fetch_dicts(con, plan.rows_for_ids_sql(), page)}
        rows = [by_id[i] for i in ids if i in by_id]
    if text is not None:
        return rows, int(found[0][1]) if found else 0
    total = len(rows)
    if total >= plan.limit:
        count = con.cursor().execute(f"SELECT count(*) FROM {source} WHERE {where}", params)
        total = int(count.fetchone()[0])
    return rows, total


def cases(
    con: Any, repeat: int, *, before: bool = False
) -> dict[str, Callable[[], tuple[int, int]]]:
    from queries import PER_DAY_SQL

    from workspaces_jobs.reporting.query import JobQuery, page_and_total
    from workspaces_jobs.reporting.store import snapshot

    windows = iter(["week", "month", "quarter", "year"] * (repeat + 2))
    devices = iter(f"dev{(37 * i) % 200:04d}" for i in range(repeat + 2))
    # A day before the data's end: "this week" then holds jobs (an hour before END,
    # a Monday 00:00 in Paris, it held none).
    now = END - timedelta(days=1)
    paged = before_page_and_total if before else page_and_total

    def list_view(**fields: Any) -> tuple[int, int]:
        with snapshot(con) as one:  # as `wsjobs list` reads: one transaction
            plan = JobQuery(con=one, tz=TZ, now=now, **fields).plan(one)
            rows, total = paged(one, plan)
        return len(rows), total

    def per_day() -> tuple[int, int]:
        rows = con.cursor().execute(PER_DAY_SQL, {"tz": TZ}).fetchall()
        return len(rows), sum(r[2] for r in rows)

    return {
        "window+status top-50": lambda: list_view(age=next(windows), status="error", limit=50),
        "column search (all time)": lambda: list_view(age="all", search="CHG00042", limit=50),
        "log search (all time)": lambda: list_view(
            age="all", search_logs="permission denied", limit=50
        ),
        "log search (this quarter)": lambda: list_view(
            age="quarter", search_logs="permission denied", limit=50
        ),
        "device history top-50": lambda: list_view(history_of=next(devices), limit=50),
        "all jobs top-50 (no filter)": lambda: list_view(age="all", limit=50),
        "group-by per day (2 years)": per_day,
    }


def time_cases(
    stores: dict[str, tuple[Any, bool]], repeat: int, *, only: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """Each query on each store, interleaved (lake, file, before, lake, ...) so a change
    of the machine's load hits them alike; p50/p95 wall and p50 CPU (user+sys) in ms."""
    made = {name: cases(con, repeat, before=before) for name, (con, before) in stores.items()}
    out: dict[str, dict[str, Any]] = {name: {} for name in stores}
    for query in made[next(iter(stores))]:
        if only and query not in only:
            continue
        walls: dict[str, list[float]] = {name: [] for name in stores}
        cpus: dict[str, list[float]] = {name: [] for name in stores}
        result: dict[str, tuple[int, int]] = {}
        for name in stores:
            made[name][query]()  # warm-up: first touch of the files
        for _ in range(repeat):
            for name in stores:
                start, cpu = time.perf_counter(), time.process_time()
                result[name] = made[name][query]()
                walls[name].append(time.perf_counter() - start)
                cpus[name].append(time.process_time() - cpu)
        for name in stores:
            out[name][query] = {
                "p50": 1000 * median(walls[name]),
                "p95": 1000 * percentile(walls[name], 95),
                "cpu": 1000 * median(cpus[name]),
                "shown": result[name][0],
                "total": result[name][1],
            }
    return out


# -- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k jobs instead of 1M")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per query")
    parser.add_argument("--batches", type=int, default=40, help="sync batches to write")
    parser.add_argument("--batch-jobs", type=int, default=50, help="jobs per sync batch")
    parser.add_argument("--keep", type=Path, default=None, help="build into DIR, reuse it")
    parser.add_argument("--skip", default="", help="comma list of: write,queries,export")
    args = parser.parse_args(argv)
    jobs = args.jobs or (100_000 if args.quick else 1_000_000)
    repeat = args.repeat or (8 if args.quick else 10)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    folder = args.keep or scratch("history")
    folder.mkdir(parents=True, exist_ok=True)
    lake, single = folder / f"lake-{jobs}.ducklake", folder / f"file-{jobs}.duckdb"
    os.environ["WSJOBS_HISTORY_STALE_AFTER"] = "0"
    print(f"load average at start: {load()}  (2 cores)", flush=True)

    from workspaces_jobs.reporting import store

    rows_out: list[Row] = []
    for name, path, build in (("lake", lake, build_lake), ("file", single, build_file)):
        if not path.exists():
            seconds = build(path, jobs)
            print(f"built {name}: {jobs:,} jobs, {jobs * 10:,} log lines in {seconds:.0f} s")
    with store.open_store(lake, read_only=True) as con:
        files = store.data_files(con)
    print(f"lake data files: {files}", flush=True)

    if "write" not in skip:
        batches = sync_batches(args.batches, args.batch_jobs)
        print(f"sync write path: {args.batches} batches of {args.batch_jobs} jobs "
              f"(3 devices x 3 steps x 10 lines each) into the {jobs:,}-job history")  # fmt: skip
        results = {}
        with store.writer_lock(lake), store.open_store(lake) as con:
            results["lake"] = write_batches(con, batches)
        con = open_file(single)
        try:
            results["file"] = write_batches(con, batches)
        finally:
            con.close()
        for name, r in results.items():
            print(
                f"  {name:4s} {r['rows']:9,.0f} rows in {r['seconds']:6.2f} s: "
                f"{r['rows'] / r['seconds']:9,.0f} rows/s  ({r['rows'] / r['cpu']:9,.0f} per CPU-s)"
            )
            rate = r["rows"] / r["seconds"]
            rows_out.append(row("history", f"sync write {name} rows/s", rate, "rows/s"))
        ratio = (results["lake"]["rows"] / results["lake"]["cpu"]) / (
            results["file"]["rows"] / results["file"]["cpu"]
        )
        print(f"  lake/file rows per CPU-s: {ratio:.2f} (#17: not lower than today's)", flush=True)

    if "queries" not in skip:
        print(f"load average before queries: {load()}", flush=True)
        cpu0 = time.process_time()
        with store.open_store(lake, read_only=True) as lake_con:
            file_con = open_file(single, read_only=True)
            try:
                stores = {"lake": (lake_con, False), "file": (file_con, False)}
                stores["before"] = (file_con, True)
                timed = time_cases(stores, repeat)
            finally:
                file_con.close()
        print(f"queries ({jobs:,} jobs, {jobs * 10:,} log lines; {repeat} runs each, "
              "interleaved; ms): lake and file = this code on the DuckLake history and on "
              "the old single DuckDB file; before = the old file with the list code of "
              "e104b3c (today's file, #17's reference); ratios of p50 CPU (user+sys)")  # fmt: skip
        for q, lk in timed["lake"].items():
            fl, bf = timed["file"][q], timed["before"][q]
            same = {(r["shown"], r["total"]) for r in (lk, fl, bf)}
            differ = "" if len(same) == 1 else "  DIFFER"
            print(
                f"  {q:28s} lake p50 {lk['p50']:7.1f} p95 {lk['p95']:7.1f} cpu {lk['cpu']:7.1f}"
                f" | file p50 {fl['p50']:7.1f} cpu {fl['cpu']:7.1f}"
                f" | before p50 {bf['p50']:7.1f} cpu {bf['cpu']:7.1f}"
                f" | lake/before x{lk['cpu'] / max(bf['cpu'], 1e-3):4.2f}"
                f" lake/file x{lk['cpu'] / max(fl['cpu'], 1e-3):4.2f}"
                f"  ({int(lk['shown'])} of {int(lk['total']):,}){differ}"
            )
            goal = 700.0 if q == "log search (all time)" else None
            if goal:
                rows_out.append(row("history", f"lake {q} p50", lk["p50"], "ms", "<", goal))
            else:
                rows_out.append(row("history", f"lake {q} p50", lk["p50"], "ms"))
            ratio = lk["cpu"] / max(bf["cpu"], 1e-3)
            rows_out.append(row("history", f"lake/before {q} CPU", ratio, "x", "<=", 1.5))
        print(f"  CPU of the query phase {time.process_time() - cpu0:.1f} s; load average"
              f" after: {load()}", flush=True)  # fmt: skip
        sys.stdout.flush()

    if "export" not in skip:
        import export

        out = scratch("history-export")
        r = export.run_child(lake, "csv", jobs, out)
        rate = r["rows"] / r["seconds"]
        print(
            f"csv export of {int(r['rows']):,} rows (lake, formula cells neutralised): "
            f"{r['seconds']:.2f} s, {rate:,.0f} rows/s ({r['rows'] / r['cpu']:,.0f} per CPU-s)"
        )
        rows_out.append(row("history", "csv export rows/s", rate, "rows/s", ">=", 1_000_000))
    print(f"load average at end: {load()}", flush=True)
    return rows_out


if __name__ == "__main__":
    main()
