"""Scheduling: what `wsjobs schedule`/`schedules` cost next to `wsjobs show`, and `--in 1m`.

Budget (issue #16): `wsjobs schedule` and `wsjobs schedules` cost no more than
`wsjobs show` on a running server; a one-off `wsjobs run --in 1m` job starts within 15 s
of its time on the embedded default (the managed server with its managed worker).

Each command is run as a user runs it (a fresh `python -m workspaces_jobs.cli` process:
import, API calls, output) against a dedicated managed server with its companions, and the
median wall time of ``--rounds`` runs is reported; the ratios divide by `wsjobs show` of a
finished job (with its logs, as a user types it). The start delay is the job's start time
minus its expected start, as the Prefect API records them.

    python benchmarks/schedule.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, dedicated_server, median, row, timer  # noqa: E402

#: The issue's start-delay budget, seconds.
START_BUDGET = 15.0


def wsjobs(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    if out.returncode != 0:
        raise SystemExit(f"wsjobs {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


def timed(args: Sequence[str], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        with timer() as t:
            wsjobs(*args)
        samples.append(t[0])
    return median(samples)


def start_delay() -> float:
    """Seconds between a `--in 1m` job's expected start and its start (the worker's work)."""
    from prefect.client.orchestration import get_client

    args = ("run", "echo", "--devices", "dev01", "--param", "message=later", "--in", "1m")
    job_id = json.loads(wsjobs(*args, "--json").stdout)["id"]
    deadline = time.monotonic() + 240
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(job_id)  # type: ignore[arg-type]
            if run.start_time is not None:
                assert run.expected_start_time is not None
                return (run.start_time - run.expected_start_time).total_seconds()
            time.sleep(0.5)
    raise SystemExit(f"the --in 1m job {job_id} did not start within 3 minutes of its time")


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    with dedicated_server():
        first = wsjobs("run", "echo", "--devices", "dev01,dev02", "--param", "message=hi", "--json")
        done = json.loads(first.stdout)
        for i in range(4):  # a few schedules to list
            wsjobs("schedule", "echo", "--all", "--param", "message=x", "--cron", f"{i} 2 * * *",
                   "--name", f"bench-list-{i}")  # fmt: skip
        wsjobs("schedules")  # warm the caches (bytecode, first queries)
        show = timed(["show", done["id"]], rounds)
        listing = timed(["schedules"], rounds)
        created: list[float] = []
        for i in range(rounds):
            with timer() as t:
                wsjobs("schedule", "echo", "--all", "--param", "message=y", "--cron", "0 3 * * *",
                       "--name", f"bench-new-{i}")  # fmt: skip
            created.append(t[0])
        create = median(created)
        delay = start_delay()
    print(f"wsjobs show JOB            {show:6.2f} s (median of {rounds})")
    print(f"wsjobs schedules           {listing:6.2f} s  = {listing / show:.2f} x show")
    print(f"wsjobs schedule --cron     {create:6.2f} s  = {create / show:.2f} x show")
    print(f"run --in 1m start delay    {delay:6.2f} s after its time (budget {START_BUDGET:g} s)")
    return [
        row("schedule", "wsjobs show (reference)", show, "s"),
        row("schedule", "wsjobs schedules / show", listing / show, "x", "<=", 1.0),
        row("schedule", "wsjobs schedule / show", create / show, "x", "<=", 1.0),
        row("schedule", "run --in 1m: start - expected", delay, "s", "<=", START_BUDGET),
    ]


if __name__ == "__main__":
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"schedule benchmark, {stamp}")
    main()
