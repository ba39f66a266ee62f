"""Benchmark (issue 19): ``wsjobs list`` / ``wsjobs show`` against the ``prefect`` CLI's
equivalents, ``prefect flow-run ls`` / ``prefect flow-run inspect``.

A dedicated server gets ``--jobs`` small jobs (3 local devices x 1 step); the history is
synced once (``wsjobs list`` reads the history, as a user's does after the background
sync). Then each command runs as a fresh process (import time counts: it is what a user
waits for), the four interleaved in every round, output to /dev/null. Printed per
command: the median wall time and the median CPU time (user+sys of the process, from
``os.wait4``), and the ratios wsjobs / prefect of both (target <= 0.6), with the load
average before and after.

Usage: ``python benchmarks/readers.py [--rounds N] [--jobs N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, dedicated_server, print_table, row, scratch  # noqa: E402


def setup_catalog(root: Path) -> None:
    inv = root / "inventory.yaml"
    inv.write_text(
        "devices:\n" + "".join(f"  - {{name: r{i}, transport: local}}\n" for i in range(3))
    )
    actions = root / "actions"
    actions.mkdir(exist_ok=True)
    (actions / "hello.yaml").write_text(
        "name: hello\nsteps:\n  - {name: say, script: 'echo hello from $WSJOBS_DEVICE'}\n"
    )
    os.environ.update(
        WSJOBS_INVENTORY=str(inv),
        WSJOBS_ACTIONS=str(actions),
        WSJOBS_HISTORY=str(root / "history.ducklake"),
    )


def timed(args: Sequence[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user+sys) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20)
    opts = parser.parse_args(argv)
    root = scratch("readers")
    setup_catalog(root)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with dedicated_server() as api:
        os.environ["PREFECT_API_URL"] = api
        from workspaces_jobs.jobs import submit_job, wait_job

        ids = [submit_job("hello", target=["all"], info=f"readers {n}") for n in range(opts.jobs)]
        for job_id in ids:
            wait_job(job_id, timeout=600)
        wsjobs = [sys.executable, "-m", "workspaces_jobs.cli"]
        prefect = [sys.executable, "-m", "prefect"]
        subprocess.run([*wsjobs, "sync"], check=True, stdout=subprocess.DEVNULL)
        commands = {
            "wsjobs list": [*wsjobs, "list"],
            "prefect flow-run ls": [*prefect, "flow-run", "ls"],
            "wsjobs show": [*wsjobs, "show", ids[-1]],
            "prefect flow-run inspect": [*prefect, "flow-run", "inspect", ids[-1]],
        }
        for args in commands.values():  # warm the page cache
            timed(args)
        wall: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(opts.rounds):
            for name, args in commands.items():
                w, c = timed(args)
                wall[name].append(w)
                cpu[name].append(c)
        med = {name: statistics.median(v) for name, v in wall.items()}
        mcpu = {name: statistics.median(v) for name, v in cpu.items()}
        for name in commands:
            rounds = ", ".join(
                f"{w:.2f}/{c:.2f}" for w, c in zip(wall[name], cpu[name], strict=True)
            )
            print(f"  ({name}: wall/CPU s per round: {rounds})")
        b = "readers"
        rows = [row(b, f"{name} (median wall; CPU {mcpu[name]:.2f} s)", med[name], "s")
                for name in commands]  # fmt: skip
        for ours, theirs in (
            ("wsjobs list", "prefect flow-run ls"),
            ("wsjobs show", "prefect flow-run inspect"),
        ):
            rows.append(
                row(b, f"{ours} / {theirs} (wall)", med[ours] / med[theirs], "x", "<=", 0.6)
            )
            rows.append(
                row(b, f"{ours} / {theirs} (CPU)", mcpu[ours] / mcpu[theirs], "x", "<=", 0.6)
            )
        print_table(rows)
        print(f"load average after {os.getloadavg()[0]:.1f}")
        return rows


if __name__ == "__main__":
    main()
