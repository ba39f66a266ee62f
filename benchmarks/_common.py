"""Shared pieces of the benchmarks: a dedicated Prefect server, timing, the results table.

Every benchmark's ``main(argv)`` prints its own figures and returns :class:`Row` s, which
``run.py`` collects into one table. Benchmarks that need a Prefect API get a dedicated
``prefect server start`` (the managed local server of ``workspaces_jobs.server``) under a
temporary ``WSJOBS_HOME`` on a free port, stopped by PID at the end, so runs start clean
and never touch a user's server. ``run.py`` starts one and lets the benchmarks share it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_shared_api: str | None = None


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    bench: str
    metric: str
    value: float
    unit: str
    target: str = ""  # e.g. "<= 1.25"; empty: reported, no target
    ok: bool | None = None

    def cells(self) -> list[str]:
        mark = "" if self.ok is None else ("ok" if self.ok else "MISSED")
        return [self.bench, self.metric, fmt(self.value), self.unit, self.target, mark]


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def check(value: float, op: str, limit: float) -> bool:
    return value <= limit if op in ("<=", "<") else value >= limit


def row(bench: str, metric: str, value: float, unit: str, op: str = "", limit: float = 0) -> Row:
    """A row, with a target ``op limit`` (e.g. ``"<", 50``) when ``op`` is given."""
    if not op:
        return Row(bench, metric, value, unit)
    return Row(bench, metric, value, unit, f"{op} {fmt(limit)}", check(value, op, limit))


def print_table(rows: Sequence[Row]) -> None:
    head = ["benchmark", "metric", "value", "unit", "target", ""]
    cells = [head, *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    right = {2}
    for n, line in enumerate(cells):
        text = "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(line)
        )
        print(text.rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a small sample."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scratch(prefix: str) -> Path:
    """A temporary folder, removed when the process exits (full-mode histories are ~2 GB)."""
    path = Path(tempfile.mkdtemp(prefix=f"wsjobs-bench-{prefix}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@contextlib.contextmanager
def dedicated_server(home: Path | None = None) -> Iterator[str]:
    """A clean ``prefect server start`` for this run; reused when one is already up here
    (unless ``home`` is given: a server on that prepared home is always a new one).

    Sets ``WSJOBS_HOME`` (server home, history file) and ``PREFECT_API_URL``; stops the
    server by the PID it recorded and restores the environment on exit.
    """
    global _shared_api
    if _shared_api is not None and home is None:
        yield _shared_api
        return
    previous = _shared_api
    saved = {
        k: os.environ.get(k)
        for k in (
            "WSJOBS_HOME",
            "WSJOBS_SERVER_PORT",
            "WSJOBS_COMPANIONS",
            "PREFECT_API_URL",
            "PREFECT_API_AUTH_STRING",
            "PREFECT_UI_URL",
        )
    }
    home = home or scratch("home")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("PREFECT_UI_URL", None)
    os.environ.update(
        WSJOBS_HOME=str(home),
        WSJOBS_SERVER_PORT=str(free_port()),
        WSJOBS_COMPANIONS="",  # no watchdog sweeping beside the timed work
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from workspaces_jobs import server

    started = time.perf_counter()
    try:
        _shared_api = server.ensure_api()
        print(
            f"(dedicated Prefect server {_shared_api}, started in "
            f"{time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        yield _shared_api
    finally:
        _shared_api = previous
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "prefect" in sys.modules:
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()
