"""Benchmark: the per-line cost of masking secrets where step lines are emitted.

Every output line of every step goes through ``Masker.__call__`` (``tasks/lines.py``)
before it becomes a log record. This times that call alone on realistic lines (80 and
400 characters, with and without a hit) for 0, 3 (the usual: SMTP password, API auth
string and its password) and 16 secrets, next to the cost of formatting the log message
the line goes into anyway (``runmeta.log_message``), in nanoseconds per line (best of 5
runs of 200,000 lines).

Usage: ``python benchmarks/masking.py [--quick]``
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, row  # noqa: E402


def main(argv: Sequence[str] | None = None) -> list[Row]:
    from workspaces_jobs.runmeta import log_message
    from workspaces_jobs.tasks.lines import Masker

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 lines per run")
    args = parser.parse_args(argv)
    n = 50_000 if args.quick else 200_000
    short = "2026-11-30 21:40:01 installed package curl 8.5.0-2 on dev0042 (took 0.31 s)    "
    lines = {"80 chars": short, "400 chars": short * 5}
    secrets = {k: [f"secret-value-{i:04d}-{'x' * 12}" for i in range(k)] for k in (0, 3, 16)}
    rows: list[Row] = []

    def best(stmt: object) -> float:
        runs = timeit.repeat(stmt, number=n, repeat=5)  # type: ignore[arg-type]
        return min(runs) / n * 1e9

    for label, line in lines.items():
        fmt = best(lambda line=line: log_message("dev0042", "patch", "out", line))
        print(f"{label}: log_message {fmt:7.0f} ns/line (the work a line costs anyway)")
        rows.append(row("masking", f"log_message, {label}", fmt, "ns/line"))
        for count, values in secrets.items():
            mask = Masker(values)
            miss = best(lambda mask=mask, line=line: mask(line))
            hit_line = line[:40] + (values[-1] if values else "") + line[40:]
            hit = best(lambda mask=mask, hit_line=hit_line: mask(hit_line))
            print(
                f"{label}: {count:2d} secrets  {miss:6.0f} ns/line (no secret in it)"
                f"  {hit:6.0f} ns/line (one secret in it)"
            )
            rows.append(row("masking", f"{count} secrets, {label}, no hit", miss, "ns/line"))
            rows.append(row("masking", f"{count} secrets, {label}, one hit", hit, "ns/line"))
    return rows


if __name__ == "__main__":
    main()
