"""Benchmark 1: what a job costs over plain Prefect.

Runs, in one process and interleaved (the machine is noisy, so ratios come from one run;
both the ratio of medians and of the best rounds are reported: on a shared machine single
rounds of either flow vary 3-10x with other load, and the best round is the one least
disturbed):

* floor — 300 plain ``true`` subprocesses on a 16-thread pool, no Prefect;
* bare — a Prefect flow submitting 300 tasks that each run ``true``, same task runner
  (ThreadPoolTaskRunner, 16 threads) and task options (no cache policy, no result
  persistence) as the job's step task, no hooks, logging or progress;
* job — the real ``script-action`` flow: 100 local devices x 3 ``true`` steps, 16 devices
  at a time, with hooks, log capture, step facts in task-run names and final states, and
  the progress artifact (pushed on a timer). Step task runs carry no tags: Prefect takes a
  tag-concurrency slot through the API for every tag of every task run, which made this
  job 10x slower (see ``workspaces_jobs.runmeta``).

Each timed run starts on a settled server (:func:`settle`, not timed). Against a
dedicated Prefect server (``_common.dedicated_server``: temporary home, free port,
stopped at the end).

Durations are the API's: each flow run's ``end_time - start_time`` as the server recorded
them, not wall time (Prefect 3.9.1 waits for its heartbeat thread at a flow's end, so wall
times land on whole seconds). Steps print one line each and log at INFO, as a real job does
(the bare flow's tasks log their line too). ``--devices 100,500,2000`` measures each size.

Usage: ``python benchmarks/overhead.py [--quick] [--rounds N] [--devices N[,N...]]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, dedicated_server, row, scratch  # noqa: E402

DEVICES, STEPS, THREADS = 100, 3, 16


def setup_catalog(root: Path, devices: int = DEVICES) -> None:
    inv = root / f"inventory-{devices}.yaml"
    inv.write_text(
        "devices:\n"
        + "".join(f"  - {{name: b{i:04d}, transport: local}}\n" for i in range(devices))
    )
    actions = root / "actions"
    actions.mkdir(exist_ok=True)
    steps = "".join(f"  - {{name: s{i}, script: 'echo step output'}}\n" for i in range(STEPS))
    (actions / "noop.yaml").write_text(f"name: noop\nsteps:\n{steps}")
    os.environ.update(
        WSJOBS_INVENTORY=str(inv),
        WSJOBS_ACTIONS=str(actions),
        WSJOBS_MAX_PARALLEL=str(THREADS),
    )


def floor(n: int = DEVICES * STEPS) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: subprocess.run(["true"]), range(n)))
    return time.perf_counter() - start


def settle(timeout: float = 120.0) -> float:
    """Wait until the client has sent, and the server has recorded, everything of the
    last run: each flow leaves ~1,000 task-run events and log batches that the server
    digests for seconds afterwards, and a run started meanwhile was measured 2-4x slower
    (rounds of 4 s and 17 s for the same flow). Returns the seconds waited."""
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    start = time.monotonic()
    EventsWorker.drain_all(timeout=timeout, at_exit=False)
    APILogWorker.drain_all(timeout=timeout, at_exit=False)
    final = {"task_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED"]}}}}
    last, stable_since = -1, time.monotonic()
    with get_client(sync_client=True) as client:
        while time.monotonic() - start < timeout:
            count = int(client.request("POST", "/task_runs/count", json=final).json())
            if count != last:
                last, stable_since = count, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                break
            time.sleep(0.2)
    return time.monotonic() - start


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--devices", default=None, help="sizes to measure, e.g. 100,500,2000 (default 100)"
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    sizes = [int(n) for n in (args.devices or str(DEVICES)).split(",")]

    tmp = scratch("overhead")
    os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"  # a real job's level: step lines are sent
    rows: list[Row] = []
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with dedicated_server():
        for n in sizes:
            setup_catalog(tmp, n)
            rows += report(measure(rounds, n), rounds, n)
    return rows


def api_seconds(state: object) -> float:
    """The flow run's ``end_time - start_time`` as the API recorded them."""
    from prefect.client.orchestration import get_client

    run_id = state.state_details.flow_run_id  # type: ignore[attr-defined]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.start_time is not None and run.end_time is not None
    return (run.end_time - run.start_time).total_seconds()


def measure(rounds: int, devices: int = DEVICES) -> dict[str, list[float]]:
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    from workspaces_jobs.flows.script_action import script_action

    # The same task options as the job's step task (tasks/run_step.py): Prefect's default
    # cache policy alone (a cache key per task run) made the bare flow ~2x slower.
    @task(cache_policy=NO_CACHE, persist_result=False, retries=0)
    def bare_step(i: int) -> int:
        done = subprocess.run(["echo", "step output"], capture_output=True, text=True)
        get_run_logger().info(done.stdout.strip())
        return done.returncode

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=THREADS), persist_result=False)
    def bare() -> None:
        futures = [bare_step.submit(i) for i in range(devices * STEPS)]
        for f in futures:
            f.wait()

    cpu: dict[str, list[float]] = {"bare": [], "job": []}

    def timed(fn: object, name: str = "") -> float:
        before = os.times()
        seconds = fn()  # type: ignore[operator]
        after = os.times()
        if name:  # this process's CPU (user+sys), its step subprocesses included
            used = sum(after[:4]) - sum(before[:4])
            cpu[name].append(used)
        return seconds  # type: ignore[no-any-return]

    def bare_run() -> float:
        return api_seconds(bare(return_state=True))

    def job() -> float:
        state = script_action(action="noop", target=["all"], return_state=True)
        assert state.is_completed(), state
        return api_seconds(state)

    timed(bare_run)  # warm-up of both flows: imports, first API connections, catalog
    timed(job)
    settle()
    results: dict[str, list[float]] = {"floor": [], "bare": [], "job": []}
    waited = 0.0
    served: dict[str, list[float]] = {"bare": [], "job": []}
    for _ in range(rounds):
        results["floor"].append(floor(devices * STEPS))
        for name, run in (("bare", bare_run), ("job", job)):
            before = server_cpu()
            results[name].append(timed(run, name))
            waited += settle()  # the server digests the run's events and logs: its CPU too
            served[name].append(server_cpu() - before)
    print(f"  (waited {waited:.0f} s in total, untimed, for the server to settle between runs)")
    results["cpu bare"], results["cpu job"] = cpu["bare"], cpu["job"]
    results["server cpu bare"], results["server cpu job"] = served["bare"], served["job"]
    return results


def server_cpu() -> float:
    """CPU seconds (user+sys) the dedicated Prefect server has used so far."""
    from workspaces_jobs import server

    info = server.read_state()
    if info is None:
        return 0.0
    fields = Path(f"/proc/{info.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def report(results: dict[str, list[float]], rounds: int, devices: int = DEVICES) -> list[Row]:
    med = {k: statistics.median(v) for k, v in results.items()}
    n = devices * STEPS
    for name, values in results.items():
        print(f"  ({name} rounds: {', '.join(f'{v:.2f}' for v in values)} s)")
    print(
        f"overhead ({devices} devices x {STEPS} steps = {n} steps, {THREADS} threads, "
        f"{rounds} rounds, medians of the API's start-to-end times)"
    )
    print(f"  floor  {n} plain subprocesses     {med['floor']:7.2f} s (wall)")
    print(
        f"  bare   Prefect flow, {n} tasks    {med['bare']:7.2f} s  "
        f"({1000 * med['bare'] / n:.1f} ms/task)"
    )
    print(
        f"  job    wsjobs script action        {med['job']:7.2f} s  "
        f"({1000 * med['job'] / n:.1f} ms/step)"
    )
    ratio = med["job"] / med["bare"]
    best = {k: min(v) for k, v in results.items()}
    best_ratio = best["job"] / best["bare"]
    print(f"  ratio  job / bare                  {ratio:7.2f}   (target <= 1.25)")
    print(
        f"  ratio  best job / best bare        {best_ratio:7.2f}   "
        f"({best['job']:.2f} s / {best['bare']:.2f} s; least disturbed by other load)"
    )
    print(f"  extra per step over bare           {1000 * (med['job'] - med['bare']) / n:7.1f} ms")
    cpu_ratio = med["cpu job"] / med["cpu bare"]
    print(
        f"  CPU    this process (user+sys)     bare {med['cpu bare']:.2f} s, job "
        f"{med['cpu job']:.2f} s: {cpu_ratio:.2f}x  (step subprocesses included)"
    )
    both = {k: [c + s for c, s in zip(results[f"cpu {k}"], results[f"server cpu {k}"], strict=True)]
            for k in ("bare", "job")}  # fmt: skip
    total_ratio = statistics.median(both["job"]) / statistics.median(both["bare"])
    print(
        f"  CPU    the server (user+sys)       bare {med['server cpu bare']:.2f} s, job "
        f"{med['server cpu job']:.2f} s: {med['server cpu job'] / med['server cpu bare']:.2f}x"
    )
    print(
        f"  CPU    client + server             bare {statistics.median(both['bare']):.2f} s, "
        f"job {statistics.median(both['job']):.2f} s: {total_ratio:.2f}x  (load-proof)"
    )
    print(
        f"  load average now                   {os.getloadavg()[0]:7.1f} on {os.cpu_count()} cores"
    )
    sys.stdout.flush()
    b = f"1 overhead N={devices}"
    return [
        row(b, f"floor: {n} plain subprocesses", med["floor"], "s"),
        row(b, f"bare Prefect flow, {n} tasks (API time)", med["bare"], "s"),
        row(b, f"wsjobs job, {devices} devices x 3 steps (API time)", med["job"], "s"),
        row(b, "ratio job / bare (medians)", ratio, "x", "<=", 1.25),
        row(b, "ratio job / bare (best of rounds)", best_ratio, "x", "<=", 1.25),
        row(b, "per step: bare Prefect", 1000 * med["bare"] / n, "ms"),
        row(b, "per step: job", 1000 * med["job"] / n, "ms"),
        row(b, "per step: job over bare", 1000 * (med["job"] - med["bare"]) / n, "ms"),
        row(b, "client CPU (user+sys) job / bare", cpu_ratio, "x"),
        row(b, "client + server CPU job / bare", total_ratio, "x", "<=", 1.25),
    ]


if __name__ == "__main__":
    main()
