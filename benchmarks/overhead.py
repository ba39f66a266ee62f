"""Benchmark 1: what a job costs over plain Prefect.

Runs, in one process and interleaved (the machine is noisy, so ratios come from one run):

* floor — 300 plain ``true`` subprocesses on a 16-thread pool, no Prefect;
* bare — a Prefect flow submitting 300 tasks that each run ``true``, same task runner
  (ThreadPoolTaskRunner, 16 threads), no hooks, logging or progress;
* job — the real ``script-action`` flow: 100 local devices x 3 ``true`` steps, 16 devices
  at a time, with hooks, per-step tags, log capture and the progress artifact.

Usage: ``python benchmarks/overhead.py [--quick] [--rounds N]`` (uses ``PREFECT_API_URL``
if set, else the managed local server under a temporary ``WSJOBS_HOME``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEVICES, STEPS, THREADS = 100, 3, 16


def setup_catalog(root: Path) -> None:
    inv = root / "inventory.yaml"
    inv.write_text(
        "devices:\n" + "".join(f"  - {{name: b{i:03d}, transport: local}}\n" for i in range(DEVICES))
    )
    actions = root / "actions"
    actions.mkdir()
    steps = "".join(f"  - {{name: s{i}, script: 'true'}}\n" for i in range(STEPS))
    (actions / "noop.yaml").write_text(f"name: noop\nsteps:\n{steps}")
    os.environ.update(
        WSJOBS_INVENTORY=str(inv),
        WSJOBS_ACTIONS=str(actions),
        WSJOBS_MAX_PARALLEL=str(THREADS),
    )


def floor() -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: subprocess.run(["true"]), range(DEVICES * STEPS)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)

    tmp = Path(tempfile.mkdtemp(prefix="wsjobs-bench-"))
    os.environ.setdefault("WSJOBS_HOME", str(tmp / "home"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    setup_catalog(tmp)
    from workspaces_jobs.server import ensure_api

    ensure_api()

    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from workspaces_jobs.flows.script_action import script_action

    @task
    def bare_step(i: int) -> int:
        return subprocess.run(["true"]).returncode

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=THREADS), persist_result=False)
    def bare() -> None:
        futures = [bare_step.submit(i) for i in range(DEVICES * STEPS)]
        for f in futures:
            f.wait()

    def timed(fn: object) -> float:
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        return time.perf_counter() - start

    def job() -> None:
        state = script_action(action="noop", target=["all"], return_state=True)
        assert state.is_completed(), state

    timed(bare)  # warm-up: imports, first API connections
    results: dict[str, list[float]] = {"floor": [], "bare": [], "job": []}
    for _ in range(rounds):
        results["floor"].append(floor())
        results["bare"].append(timed(bare))
        results["job"].append(timed(job))

    med = {k: statistics.median(v) for k, v in results.items()}
    n = DEVICES * STEPS
    print(f"overhead ({DEVICES} devices x {STEPS} steps = {n} steps, {THREADS} threads, "
          f"{rounds} rounds, medians)")
    print(f"  floor  300 plain subprocesses      {med['floor']:7.2f} s")
    print(f"  bare   Prefect flow, 300 tasks     {med['bare']:7.2f} s  "
          f"({1000 * med['bare'] / n:.1f} ms/task)")
    print(f"  job    wsjobs script action        {med['job']:7.2f} s  "
          f"({1000 * med['job'] / n:.1f} ms/step)")
    ratio = med["job"] / med["bare"]
    print(f"  ratio  job / bare                  {ratio:7.2f}   (target <= 1.25)")
    print(f"  extra per step over bare           {1000 * (med['job'] - med['bare']) / n:7.1f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
