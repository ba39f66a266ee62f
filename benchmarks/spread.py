"""One job across many workers (issue 19): N local devices x 3 ``sleep 0.2`` steps as one
job on one worker (not spread) against the same job spread in three shards over three
workers, on docs/operations.md's team setup (``tests/teamstack.py``: a real PostgreSQL, a Prefect
server on it, three ``wsjobs worker`` processes on one queue).

    .venv/bin/python benchmarks/spread.py [--quick] [--devices N] [--rounds R]

The job's time is its flow run's ``start_time`` to ``end_time`` from the API (the spread
job's own run covers its shards); the wall time from submitting to the final state is
printed too, and the CPU time (user+sys) the server, the workers and PostgreSQL used for it
(from /proc). Both modes run the same deployment; the mode is a per-run job variable
(``WSJOBS_SPREAD_OVER`` 0 = never, or 1 with ``WSJOBS_SHARD_SIZE`` = ceil(N / 3)).
``WSJOBS_MAX_PARALLEL`` is 16 (the default) on every worker: one worker sleeps 16 devices
at once, three workers 48. All processes share this machine's cores (``nproc``), so the
spread run measures what three worker processes add on one host, not three hosts.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from teamstack import Team, children, team  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int, *, waited: bool) -> float:
    """CPU seconds (user+sys) of one process, with its waited-for children's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if waited:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def stack_cpu(stack: Team) -> float:
    """CPU seconds used so far by the stack: the Prefect server, the workers (their ended
    flow-run processes included) and PostgreSQL (its ended backends included), plus every
    process of theirs still alive."""
    roots = [p.pid for p in (stack.server, *stack.workers.values()) if p is not None]
    with contextlib.suppress(OSError, ValueError, IndexError):
        roots.append(int((stack.pg.folder / "data" / "postmaster.pid").read_text().split()[0]))
    live = {kid for root in roots for kid in children(root)}
    return sum(_cpu(r, waited=True) for r in roots) + sum(_cpu(k, waited=False) for k in live)


ACTION = """name: sleepy
description: Three short steps (benchmarks/spread.py).
steps:
  - {name: one, script: sleep 0.2}
  - {name: two, script: sleep 0.2}
  - {name: three, script: sleep 0.2}
"""


def _seconds(run: dict[str, object]) -> float:
    start = datetime.fromisoformat(str(run["start_time"]).replace("Z", "+00:00"))
    end = datetime.fromisoformat(str(run["end_time"]).replace("Z", "+00:00"))
    return (end - start).total_seconds()


def one_job(stack: Team, devices: int, spread: bool) -> tuple[float, float, str, float]:
    env = (
        {"WSJOBS_SPREAD_OVER": "1", "WSJOBS_SHARD_SIZE": str(math.ceil(devices / 3))}
        if spread
        else {"WSJOBS_SPREAD_OVER": "0"}
    )
    cpu0 = stack_cpu(stack)
    t0 = time.monotonic()
    run_id = stack.run_deployment(
        "bench",
        {"action": "sleepy", "target": ["all"], "info": "spread bench", "owner": "bench"},
        tags=["workspaces", "action:sleepy", "owner:bench"],
        job_variables={"env": env},
    )
    run = stack.wait_final(run_id, timeout=3600)
    wall = time.monotonic() - t0
    time.sleep(5)  # the last flow-run processes exit and are waited for
    return _seconds(run), wall, str(run["state"]["name"]), stack_cpu(stack) - cpu0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 devices, 1 round")
    parser.add_argument("--devices", type=int, default=None, help="devices (default 2000)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of (one, three)")
    args = parser.parse_args(argv)
    devices = args.devices or (300 if args.quick else 2000)
    tmp = Path(tempfile.mkdtemp(prefix="wsjobs-bench-spread-"))
    (tmp / "actions").mkdir()
    (tmp / "actions" / "sleepy.yaml").write_text(ACTION)
    (tmp / "inventory.yaml").write_text(
        "devices:\n"
        + "".join(f"  - {{name: d{n:05d}, transport: local}}\n" for n in range(devices))
    )
    extra = {
        "WSJOBS_INVENTORY": str(tmp / "inventory.yaml"),
        "WSJOBS_ACTIONS": str(tmp / "actions"),
        "WSJOBS_COMPANIONS": "",
    }
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {devices} devices")
    workers = (("w1", "bench"), ("w2", "bench"), ("w3", "bench"))
    one: list[float] = []
    three: list[float] = []
    cpu: dict[bool, list[float]] = {False: [], True: []}
    with team(tmp / "stack", workers=workers, extra_env=extra) as stack:
        for r in range(args.rounds):
            for spread in (False, True):
                load = os.getloadavg()[0]
                api, wall, status, used = one_job(stack, devices, spread)
                (three if spread else one).append(api)
                cpu[spread].append(used)
                label = "three workers (spread)" if spread else "one worker"
                print(
                    f"round {r + 1}: {label:24} {api:7.1f} s (API start->end), "
                    f"{wall:7.1f} s wall, {used:7.1f} CPU-s (server+workers+PostgreSQL), "
                    f"load {load:.1f} -> {os.getloadavg()[0]:.1f}, {status}",
                    flush=True,
                )
    a, b = statistics.median(one), statistics.median(three)
    print(f"\n{devices} devices x 3 sleep 0.2 steps ({devices * 3} steps)")
    print(f"one worker          : {a:.1f} s  ({devices * 3 / a:.0f} steps/s)")
    print(f"three workers spread: {b:.1f} s  ({devices * 3 / b:.0f} steps/s)")
    print(f"speed-up            : {a / b:.2f}x")
    ca, cb = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(f"CPU (user+sys)      : one {ca:.0f} s, spread {cb:.0f} s ({cb / ca:.2f}x)")
    print(f"load average after  : {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
