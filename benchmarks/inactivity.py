"""Benchmark: how fast a silent job becomes Error (inactivity), and what a recovery costs.

Against a dedicated Prefect server, runs the test action ``quiet-then-done`` (a step that
prints, stays silent for ``--quiet`` seconds past a 1 s inactivity timeout, then prints and
finishes) ``--runs`` times, one after the other, and reads the facts back from the API:

* mark delay — the Inactivity state's time minus the step's last line before the silence,
  minus the 1 s timeout: what the guard adds (poll + one state write + the hook);
* recovered end — the job's end (as shown) minus the step's "back again" line: the real
  end time, against Prefect's ``end_time`` which stays at the Error.

Usage: ``python benchmarks/inactivity.py [--runs N] [--quiet S]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dedicated_server, median, print_table, row  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quiet", type=float, default=3.0)
    args = parser.parse_args()
    os.environ.update(
        WSJOBS_INVENTORY=str(DATA / "inventory.yaml"),
        WSJOBS_ACTIONS=str(DATA / "actions"),
        PREFECT_LOGGING_TO_API_BATCH_INTERVAL="0.3",
        PREFECT_LOGGING_LEVEL="INFO",  # step lines are INFO records: the facts read here
    )
    with dedicated_server():
        from prefect.client.orchestration import get_client

        from workspaces_jobs.jobs import read_job, submit_job, wait_job

        delays, ends, prefect_ends, recovered = [], [], [], 0
        for _ in range(args.runs):
            job_id = submit_job(
                "quiet-then-done", target=["t1"], params={"quiet": f"{args.quiet:g}"}
            )
            wait_job(job_id, timeout=120)
            job = read_job(job_id)
            for _ in range(100):  # the final state and the last log batch come a moment later
                texts = {line.message for line in job.logs}
                if job.status == "Completed" and {"going quiet", "back again"} <= texts:
                    break
                time.sleep(0.2)
                job = read_job(job_id)
            with get_client(sync_client=True) as client:
                states = client.read_flow_run_states(UUID(job_id))
                run = client.read_flow_run(UUID(job_id))
            marked = next(s.timestamp for s in states if s.name == "Inactivity")
            quiet = next(line.ts for line in job.logs if line.message == "going quiet")
            back = next(line.ts for line in job.logs if line.message == "back again")
            delays.append((marked - quiet).total_seconds() - 1.0)
            assert job.ended is not None and run.end_time is not None
            ends.append((job.ended - back).total_seconds())
            prefect_ends.append((run.end_time - back).total_seconds())
            recovered += int(job.recovered)
        print_table(
            [
                row("inactivity", "mark delay after the timeout (median)", median(delays), "s"),
                row("inactivity", "mark delay after the timeout (max)", max(delays), "s"),
                row("inactivity", "shown end - last line (median)", median(ends), "s"),
                row(
                    "inactivity", "Prefect end_time - last line (median)", median(prefect_ends), "s"
                ),  # noqa: E501
                row("inactivity", "jobs flagged recovered", recovered, f"of {args.runs}"),
            ]
        )


if __name__ == "__main__":
    main()
