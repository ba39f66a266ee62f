"""Concurrency soak of the DuckLake history (issue 17): a writer commits a sync-sized batch
every 2 s while the web view serves its list and detail pages (one client loop), three
`wsjobs list` loops run and one DuckDB session holds a read transaction for 60 s; prints
errors, p95 read latencies and the lag from a commit to its rows being visible to a reader.

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
            jobs = [synthetic.job_row(0) for k in range(10)]  # random UUIDs, as Prefect
            for j in jobs:
                j["parameters"] = "{}"
                j["info"] = f"soak {n}"
            seen = [{"job_id": j["id"], "api_updated": j["updated"], "fingerprint": "soak",
                     "settled": True, "last_log_ts": None} for j in jobs]
            cur.execute("BEGIN TRANSACTION")
            R.upsert(cur, "jobs", R.to_arrow("jobs", jobs))
            R.upsert(cur, "sync_jobs", R.to_arrow("sync_jobs", seen))  # detail: history copy
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


WEB = textwrap.dedent(
    """
    import sys, uvicorn
    from workspaces_jobs.web.app import create_app
    from workspaces_jobs.web.state import WebState
    state = WebState(sys.argv[1], sync_every=0)  # the writer above is the one sync
    uvicorn.run(create_app(state), host="127.0.0.1", port=int(sys.argv[2]), log_level="error")
    """
)


def _web_loop(port: int, end: float, out: dict[str, list[float] | list[str]]) -> None:
    """One browser-like client: the list page (all time), then the newest job's detail."""
    import re

    import httpx

    base = f"http://127.0.0.1:{port}"
    lat: list[float] = out["web"]  # type: ignore[assignment]
    errs: list[str] = out["errors"]  # type: ignore[assignment]
    import secrets

    from workspaces_jobs.identity import add_user, get_user
    from workspaces_jobs.identity.sessions import new_session

    if get_user("soak") is None:  # the web view needs a signed-in user (issue 18)
        add_user("soak", "viewer", secrets.token_urlsafe(16))
    sid = new_session("soak", now=time.time(), idle_seconds=86_400)
    with httpx.Client(base_url=base, timeout=60) as client:
        client.cookies.set("wsjobs_session", sid, domain="127.0.0.1", path="/")
        while time.monotonic() < end:
            try:
                started = time.monotonic()
                page = client.get("/", params={"age": "all"})
                lat.append(time.monotonic() - started)
                if page.status_code != 200:
                    errs.append(f"web list {page.status_code}")
                    continue
                found = re.search(r'href="/jobs/([^"/?]+)"', page.text)
                if found:
                    started = time.monotonic()
                    detail = client.get(f"/jobs/{found.group(1)}")
                    lat.append(time.monotonic() - started)
                    if detail.status_code != 200:
                        errs.append(f"web detail {detail.status_code}")
            except httpx.HTTPError as exc:
                if time.monotonic() > end - 1:
                    break
                errs.append(f"web: {type(exc).__name__}")
                time.sleep(0.5)
            time.sleep(0.2)


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
    import threading

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import free_port

    port = free_port()
    web = subprocess.Popen([sys.executable, "-c", WEB, str(path), str(port)], env=env)
    _wait_port(port)
    errors: list[str] = []
    web_out: dict[str, list[float] | list[str]] = {"web": [], "errors": errors}
    web_client = threading.Thread(
        target=_web_loop, args=(port, time.monotonic() + seconds, web_out), daemon=True
    )
    web_client.start()
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
    web_client.join(timeout=120)
    web.terminate()
    web.wait(timeout=60)
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
    web_lat = sorted(web_out["web"])  # type: ignore[type-var]
    web95 = web_lat[int(len(web_lat) * 0.95)] if web_lat else float("nan")
    print(f"web pages (list + detail): {len(web_lat)} served, p95 {web95:.2f} s")
    print(f"lag commit -> visible to a reader, p95 (upper bound): {lag95:.2f} s")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"held read transaction: {h_out.strip()}")


def _wait_port(port: int, timeout: float = 120.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"the web view did not listen on {port} within {timeout:g} s")


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
