"""The day's volume on the team setup (issue 19): jobs keep arriving while the sync runs.

    .venv/bin/python benchmarks/soak_team.py [--quick] [--minutes M] [--per-minute J]
                                             [--devices D]

The team setup of docs/operations.md (``tests/teamstack.py``: a real PostgreSQL, a Prefect server on
it, three ``wsjobs worker`` processes on one queue) gets J jobs a minute (default 20) of D
local devices (default 50) x 3 short steps (3 output lines each) for M minutes (default
15; ``--quick``: 3), submitted evenly through the deployment, while ``wsjobs sync`` runs
once a minute into a history. It prints:

* jobs submitted / finished, and the rate the three workers kept;
* **history lag**: for each finished job, the time from its end (the API's ``end_time``)
  to the end of the first sync after which the history holds it with its final status
  (median, p95, max);
* each sync's duration;
* **server CPU and memory**: CPU seconds used by the Prefect server's process tree and
  by PostgreSQL over the run (and as cores), and their peak resident memory;
* **PostgreSQL size** growth per 1,000 jobs (``pg_database_size``);
* a **projection to 1M jobs a day** from those figures (linear: CPU per job, bytes per
  job, sync seconds per job).

Everything runs on this machine's cores (``nproc``) with the workers and the sync, so the
server's CPU share is what it used here, not what it would use alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from proctree import children  # noqa: E402
from teamstack import Team, team  # noqa: E402

ACTION = """name: soak
description: Three short steps of three lines (benchmarks/soak_team.py).
steps:
  - {name: one, script: 'for i in 1 2 3; do echo "one $i"; done'}
  - {name: two, script: 'for i in 1 2 3; do echo "two $i"; done'}
  - {name: three, script: 'for i in 1 2 3; do echo "three $i"; done'}
"""
TICKS = os.sysconf("SC_CLK_TCK")
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _cpu_rss(pids: list[int]) -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of these processes now."""
    cpu, rss = 0.0, 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICKS
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return cpu, rss


def _postgres_pids(stack: Team) -> list[int]:
    try:
        main = int((stack.pg.folder / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [main, *children(main)]


class Sampler(threading.Thread):
    """Peak RSS of the server tree and of PostgreSQL, every 2 s."""

    def __init__(self, stack: Team) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stop = threading.Event()
        self.server_peak = 0
        self.pg_peak = 0

    def server_pids(self) -> list[int]:
        assert self.stack.server is not None
        return [self.stack.server.pid, *children(self.stack.server.pid)]

    def run(self) -> None:
        while not self.stop.wait(2.0):
            self.server_peak = max(self.server_peak, _cpu_rss(self.server_pids())[1])
            self.pg_peak = max(self.pg_peak, _cpu_rss(_postgres_pids(self.stack))[1])


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _in_history(stack: Team, history: Path) -> dict[str, str]:
    out = stack.cli(
        "wsjobs", "sql", "--history", str(history), "--csv", "-c", "SELECT id, status FROM jobs"
    )
    if out.returncode != 0:
        return {}
    return dict(line.split(",", 1) for line in out.stdout.strip().splitlines()[1:] if "," in line)


def _final_runs(stack: Team, ids: list[str]) -> dict[str, datetime]:
    """Job id -> end time of the submitted jobs that have ended."""
    ended: dict[str, datetime] = {}
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        runs = stack.post(
            "/flow_runs/filter", {"flow_runs": {"id": {"any_": chunk}}, "limit": len(chunk)}
        )
        for run in runs:
            if (run.get("state") or {}).get("type") in FINAL and run.get("end_time"):
                ended[run["id"]] = _when(run["end_time"])
    return ended


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 minutes")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--per-minute", type=float, default=20.0)
    parser.add_argument("--devices", type=int, default=50)
    args = parser.parse_args(argv)
    minutes = args.minutes or (3.0 if args.quick else 15.0)
    tmp = Path(tempfile.mkdtemp(prefix="wsjobs-soak-team-"))
    (tmp / "actions").mkdir()
    (tmp / "actions" / "soak.yaml").write_text(ACTION)
    (tmp / "inventory.yaml").write_text(
        "devices:\n"
        + "".join(f"  - {{name: s{n:03d}, transport: local}}\n" for n in range(args.devices))
    )
    extra = {
        "WSJOBS_INVENTORY": str(tmp / "inventory.yaml"),
        "WSJOBS_ACTIONS": str(tmp / "actions"),
        "WSJOBS_COMPANIONS": "",
        "WSJOBS_SPREAD_OVER": "0",
    }
    workers = (("w1", "soak"), ("w2", "soak"), ("w3", "soak"))
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {minutes:g} min, "
        f"{args.per_minute:g} jobs/min of {args.devices} devices x 3 steps",
        flush=True,
    )
    with team(tmp / "stack", workers=workers, extra_env=extra) as stack:
        history = tmp / "history.ducklake"
        sampler = Sampler(stack)
        size0 = stack.pg.size_bytes()
        cpu0 = _cpu_rss(sampler.server_pids())[0]
        pg0 = _cpu_rss(_postgres_pids(stack))[0]
        sampler.start()
        submitted: list[str] = []
        first_seen: dict[str, float] = {}  # job id -> wall time of the sync that had it
        lags: list[float] = []
        syncs: list[float] = []
        start = time.monotonic()
        t0_utc = datetime.now(UTC)
        end = start + minutes * 60
        every = 60.0 / args.per_minute
        next_sync = start + 60.0

        def sync_once() -> None:
            s0 = time.monotonic()
            done = stack.cli("wsjobs", "sync", "--history", str(history), "--quiet", timeout=900)
            took = time.monotonic() - s0
            syncs.append(took)
            done_utc = datetime.now(UTC)
            have = _in_history(stack, history)
            ended = _final_runs(stack, submitted)
            new = 0
            for job_id, ended_at in ended.items():
                if job_id not in first_seen and have.get(job_id, "") not in ("", "Pending"):
                    if have[job_id] != "In progress":
                        first_seen[job_id] = time.monotonic()
                        lags.append((done_utc - ended_at).total_seconds())
                        new += 1
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
            print(
                f"  sync {len(syncs)}: {took:.1f} s ({status}); {len(submitted)} submitted, "
                f"{len(ended)} ended, {len(first_seen)} in the history (+{new})",
                flush=True,
            )

        def submit_loop() -> None:
            """Jobs at an even pace from their own thread: a slow sync never holds them."""
            next_job = start
            while next_job < end:
                time.sleep(max(0.0, next_job - time.monotonic()))
                try:
                    submitted.append(
                        stack.run_deployment(
                            "soak",
                            {"action": "soak", "target": ["all"], "info": "soak",
                             "owner": "soak"},
                            tags=["workspaces", "action:soak", "owner:soak"],
                        )
                    )  # fmt: skip
                except Exception as exc:  # a loaded server may refuse one: count it
                    print(f"  submit failed: {exc}", flush=True)
                next_job += every

        submitter = threading.Thread(target=submit_loop, daemon=True)
        submitter.start()
        while time.monotonic() < end:
            time.sleep(max(0.0, min(next_sync, end) - time.monotonic()))
            if time.monotonic() >= next_sync:
                sync_once()
                next_sync = max(next_sync + 60.0, time.monotonic() + 1)
        submitter.join()
        submit_minutes = (time.monotonic() - start) / 60
        # Drain: wait (bounded) for the submitted jobs to end, then sync until all are in.
        drain_end = time.monotonic() + (240 if args.quick else 600)
        while time.monotonic() < drain_end and len(_final_runs(stack, submitted)) < len(submitted):
            time.sleep(5)
        for _ in range(5):
            sync_once()
            if len(first_seen) >= len(_final_runs(stack, submitted)):
                break
        elapsed = time.monotonic() - start
        sampler.stop.set()
        cpu = _cpu_rss(sampler.server_pids())[0] - cpu0
        pg_cpu = _cpu_rss(_postgres_pids(stack))[0] - pg0
        size = stack.pg.size_bytes() - size0
        ended = _final_runs(stack, submitted)
        states: dict[str, int] = {}
        for run in stack.post(
            "/flow_runs/filter",
            {"flow_runs": {"id": {"any_": submitted[:200]}}, "limit": 200},
        ):
            name = (run.get("state") or {}).get("name", "?")
            states[name] = states.get(name, 0) + 1
        last_end = max(ended.values()) if ended else t0_utc
        kept = len(ended) / max((last_end - t0_utc).total_seconds() / 60, 1e-9)

    jobs = max(len(ended), 1)
    lags.sort()
    p95 = lags[min(len(lags) - 1, int(0.95 * len(lags)))] if lags else float("nan")
    print(f"\nsubmitted {len(submitted)} jobs in {submit_minutes:.1f} min; {len(ended)} ended")
    print(f"states of the first 200: {states}")
    print(f"rate the three workers kept: {kept:.1f} jobs/min (first submit to last end)")
    if lags:
        print(
            f"history lag (job end -> in the history): median {statistics.median(lags):.0f} s,"
            f" p95 {p95:.0f} s, max {lags[-1]:.0f} s over {len(lags)} jobs"
        )
    print(f"syncs: {len(syncs)}, median {statistics.median(syncs):.1f} s, max {max(syncs):.1f} s")
    print(
        f"Prefect server: {cpu:.0f} CPU-s over {elapsed:.0f} s ({cpu / elapsed:.2f} cores), "
        f"peak RSS {sampler.server_peak / 2**20:.0f} MB; {cpu / jobs:.2f} CPU-s per job"
    )
    print(
        f"PostgreSQL: {pg_cpu:.0f} CPU-s ({pg_cpu / elapsed:.2f} cores), peak RSS "
        f"{sampler.pg_peak / 2**20:.0f} MB; size +{size / 2**20:.1f} MB = "
        f"{size / jobs * 1000 / 2**20:.1f} MB per 1,000 jobs"
    )
    per_day = 1_000_000
    sync_per_job = sum(syncs) / jobs
    print(f"\nprojection to {per_day:,} jobs/day ({per_day / 1440:.0f} jobs/min), linear:")
    print(f"  Prefect server CPU : {cpu / jobs * per_day / 86400:.1f} cores")
    print(f"  PostgreSQL CPU     : {pg_cpu / jobs * per_day / 86400:.1f} cores")
    print(f"  PostgreSQL growth  : {size / jobs * per_day / 2**30:.1f} GB/day")
    print(f"  sync time          : {sync_per_job * per_day / 86400:.2f} s per second of day")
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
