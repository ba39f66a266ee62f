"""Concurrency soak of the DuckLake history (issue 17): a writer commits a sync-sized batch
every 2 s while three `wsjobs list` loops run and one DuckDB session holds a read
transaction; prints errors, p95 read latency and the lag from a commit to its rows being
visible to a reader.

    .venv/bin/python benchmarks/soak.py [--quick] [--seconds N] [--history PATH]

The writer is the sync's own write path (reporting.rows upserts, one transaction per
batch) without a Prefect server, so the figures are the store's, not the API's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from workspaces_jobs.reporting import rows as R, store, synthetic
    path, seconds, every = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    end = time.monotonic() + seconds
    n = 0
    with store.writer_lock(path, timeout=60), store.open_store(path) as con:
        cur = con.cursor()
        while time.monotonic() < end:
            start = time.monotonic()
            jobs = [synthetic.job_row(0, id=f"s{n:06d}-{k}") for k in range(10)]
            for j in jobs:
                j["parameters"] = "{}"
                j["info"] = f"soak {n}"
            cur.execute("BEGIN TRANSACTION")
            R.upsert(cur, "jobs", R.to_arrow("jobs", jobs))
            cur.execute("COMMIT")
            print(n, time.time(), flush=True)
            n += 1
            if n % 50 == 0:
                store.maintain_if_due(con, path)
            time.sleep(max(0.0, every - (time.monotonic() - start)))
    """
)

HOLD = textwrap.dedent(
    """
    import sys, time
    from workspaces_jobs.reporting.store import open_store
    with open_store(sys.argv[1], read_only=True) as con:
        cur = con.cursor()
        cur.execute("BEGIN TRANSACTION")
        first = cur.execute("SELECT count(*) FROM jobs").fetchone()
        time.sleep(float(sys.argv[2]))
        again = cur.execute("SELECT count(*) FROM jobs").fetchone()
        cur.execute("COMMIT")
    print("same snapshot" if first == again else f"MOVED {first} {again}", flush=True)
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 s instead of 300 s")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--history", type=Path, default=None)
    args = parser.parse_args()
    seconds = args.seconds or (30.0 if args.quick else 300.0)
    folder = Path(tempfile.mkdtemp(prefix="wsjobs-soak-"))
    path = args.history or folder / "history.ducklake"
    env = {**os.environ, "WSJOBS_HISTORY": str(path), "WSJOBS_HISTORY_STALE_AFTER": "0"}
    subprocess.run(
        [sys.executable, "-c", "from workspaces_jobs.reporting.store import open_store\n"
         f"with open_store({str(path)!r}): pass"], check=True, env=env,
    )  # fmt: skip
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(seconds), "2"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(min(60.0, seconds / 2))],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    errors: list[str] = []
    latencies: list[float] = []
    lags: list[float] = []
    end = time.monotonic() + seconds
    cli = [sys.executable, "-m", "workspaces_jobs.cli", "list", "--json", "--age", "all"]
    loops: list[subprocess.Popen[str]] = []
    started: list[float] = []
    while time.monotonic() < end:
        while len(loops) < 3:  # three `wsjobs list` loops
            started.append(time.time())
            loops.append(
                subprocess.Popen(
                    cli + ["-n", "1"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )  # fmt: skip
            )
        for proc in list(loops):
            if proc.poll() is None:
                continue
            out, err = proc.communicate()
            began = started[loops.index(proc)]
            latencies.append(time.time() - began)
            if proc.returncode != 0:
                errors.append(err.strip().splitlines()[-1] if err.strip() else "exit")
            else:
                rows = json.loads(out)
                if rows:  # the newest job's batch: how long ago was it committed?
                    lags.append(_lag(rows[0], path))
            started.pop(loops.index(proc))
            loops.remove(proc)
        time.sleep(0.05)
    for proc in loops:
        proc.wait()
    w_out, _ = writer.communicate(timeout=120)
    h_out, _ = holder.communicate(timeout=120)
    if "same snapshot" not in h_out:
        errors.append(f"held read transaction: {h_out.strip()}")
    if writer.returncode != 0:
        errors.append("writer failed")
    batches = len(w_out.splitlines())
    latencies.sort()
    lags.sort()
    p95 = latencies[int(len(latencies) * 0.95)] if latencies else float("nan")
    lag95 = lags[int(len(lags) * 0.95)] if lags else float("nan")
    print(f"soak: {seconds:.0f} s, {batches} commits, {len(latencies)} `wsjobs list` runs")
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"list p95 latency (whole command, process start included): {p95:.2f} s")
    print(f"lag commit -> visible to a reader, p95 (upper bound): {lag95:.2f} s")
    print(f"held read transaction: {h_out.strip()}")


def _lag(row: dict[str, object], path: Path) -> float:
    """Seconds since the row's batch was written (its ``synced`` stamp), an upper bound
    of the lag as the reader finished after that."""
    from datetime import UTC, datetime

    from workspaces_jobs.reporting.store import open_store

    with open_store(path, read_only=True) as con:
        got = (
            con.cursor()
            .execute("SELECT max(synced) FROM jobs WHERE id = $id", {"id": row["id"]})
            .fetchone()
        )
    return (datetime.now(UTC) - got[0]).total_seconds() if got and got[0] else float("nan")


if __name__ == "__main__":
    main()
