"""Benchmark: what a step costs over SSH, and what connection reuse saves.

Starts the test sshd (tests/sshd.py) on 127.0.0.1 and runs ``true`` steps through
:class:`SSHTransport` (no Prefect), interleaved in rounds because the machine is noisy:

* reused — N steps on one device in one job: one connection, a session per step;
* fresh  — N steps each in its own job: a new connection (handshake + login) per step;
* raw    — N ``true`` execs with plain asyncssh on one connection (the floor: sshd
  forks a session and the login shell per exec).

Usage: ``python benchmarks/ssh_steps.py [--steps N] [--rounds R]`` (root or a user that
may run sshd; needs openssh-server).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import asyncssh  # noqa: E402
import sshd  # noqa: E402

from workspaces_jobs.catalog import Device  # noqa: E402
from workspaces_jobs.tasks.transports import TRANSPORTS  # noqa: E402


def run_steps(dev: Device, n: int, *, fresh: bool) -> float:
    transport = TRANSPORTS.get("ssh")
    start = time.perf_counter()
    for i in range(n):
        job = f"bench-{i}" if fresh else "bench"
        result = transport.run(
            dev,
            script="true",
            shell="/bin/sh",
            env={"WSJOBS_JOB_ID": job},
            on_line=lambda s, t: None,
            timeout=None,
            inactivity=None,
        )
        assert result.exit_code == 0, result
        if fresh:
            transport.close(job)
    transport.close("bench")
    return (time.perf_counter() - start) / n


def run_raw(srv: sshd.Sshd, n: int) -> float:
    async def go() -> float:
        async with asyncssh.connect(
            "127.0.0.1",
            srv.port,
            username=srv.user,
            client_keys=[str(srv.client_key)],
            known_hosts=str(srv.known_hosts),
            config=None,
        ) as conn:
            start = time.perf_counter()
            for _ in range(n):
                await conn.run("true", check=True)
            return (time.perf_counter() - start) / n

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    srv = sshd.start(Path(tempfile.mkdtemp(prefix="wsjobs-bench-sshd-")))
    try:
        dev = Device(
            name="bench",
            transport="ssh",
            host="127.0.0.1",
            port=srv.port,
            user=srv.user,
            key_file=str(srv.client_key),
            known_hosts=str(srv.known_hosts),
        )
        times: dict[str, list[float]] = {"raw": [], "reused": [], "fresh": []}
        for _ in range(args.rounds):
            times["raw"].append(run_raw(srv, args.steps))
            times["reused"].append(run_steps(dev, args.steps, fresh=False))
            times["fresh"].append(run_steps(dev, args.steps, fresh=True))
        med = {k: statistics.median(v) for k, v in times.items()}
        for name, value in med.items():
            print(f"{name:7s} {value * 1000:7.1f} ms per step (median of {args.rounds} rounds)")
        print(f"reused / raw   = {med['reused'] / med['raw']:.2f}")
        print(f"fresh  / reused = {med['fresh'] / med['reused']:.2f}")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
