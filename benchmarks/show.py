"""Benchmark: ``wsjobs show`` on a big job against ``prefect flow-run inspect``.

The job: 20 local devices × 200 output lines, plus one 2 MB line on one device (cut into
32,000-character pieces by the step runner). Both commands run as fresh processes
(import time counts: it is what a user waits for), interleaved, output to /dev/null;
``wsjobs show`` with its defaults (the last 10 lines per step, lines cut at 1,000
characters). Target: median ratio ≤ 1.2. Also reported: ``--lines 0`` (every line) and
``--no-logs``.

Usage: ``python benchmarks/show.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dedicated_server, print_table, row, scratch  # noqa: E402

DEVICES, LINES, BIG = 20, 200, 2_000_000


def setup_catalog(root: Path) -> None:
    inv = root / "inventory.yaml"
    inv.write_text(
        "devices:\n"
        + "".join(f"  - {{name: s{i:02d}, transport: local}}\n" for i in range(DEVICES))
    )
    actions = root / "actions"
    actions.mkdir()
    script = (
        f'i=0; while [ "$i" -lt {LINES} ]; do i=$((i+1)); echo "line $i of $WSJOBS_DEVICE"; done\n'
        f'if [ "$WSJOBS_DEVICE" = s00 ]; then python3 -c "print(\'x\' * {BIG})"; fi\n'
    )
    (actions / "big.yaml").write_text(
        "name: big\nsteps:\n  - name: print\n    script: |\n"
        + "".join(f"      {line}\n" for line in script.splitlines())
    )
    os.environ.update(WSJOBS_INVENTORY=str(inv), WSJOBS_ACTIONS=str(actions))


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    root = scratch("show")
    setup_catalog(root)
    with dedicated_server() as api:
        os.environ["PREFECT_API_URL"] = api
        # The step lines are INFO records: the shared setup quiets Prefect to WARNING.
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
        from workspaces_jobs.jobs import read_job, submit_job, wait_job

        job_id = submit_job("big", target=["all"], info="show benchmark")
        wait_job(job_id, timeout=600)
        for _ in range(60):  # the last log batches
            job = read_job(job_id)
            if any(x.message.startswith("Finished in state") and not x.step_id for x in job.logs):
                break
            time.sleep(1)
        print(f"job {job_id}: {len(job.logs)} log records", flush=True)
        wsjobs = [sys.executable, "-m", "workspaces_jobs.cli", "show", job_id]
        prefect = [sys.executable, "-m", "prefect", "flow-run", "inspect", job_id]
        results: dict[str, list[float]] = {"show": [], "inspect": [], "all": [], "nologs": []}
        timed(wsjobs), timed(prefect)  # warm the page cache
        for _ in range(opts.rounds):
            results["show"].append(timed(wsjobs))
            results["inspect"].append(timed(prefect))
            results["all"].append(timed([*wsjobs, "--lines", "0"]))
            results["nologs"].append(timed([*wsjobs, "--no-logs"]))
        med = {k: statistics.median(v) for k, v in results.items()}
        print_table(
            [
                row("show", "prefect flow-run inspect (median)", med["inspect"], "s"),
                row("show", "wsjobs show (median)", med["show"], "s"),
                row("show", "wsjobs show --lines 0 (median)", med["all"], "s"),
                row("show", "wsjobs show --no-logs (median)", med["nologs"], "s"),
                row("show", "show / inspect", med["show"] / med["inspect"], "x", "<=", 1.2),
                row(
                    "show",
                    "best show / best inspect",
                    min(results["show"]) / min(results["inspect"]),
                    "x",
                ),
            ]
        )


if __name__ == "__main__":
    main()
