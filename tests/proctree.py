"""Processes a test starts itself (servers, workers) and how it waits on them and ends them.

One copy for the suite (it was written three times: tests/teamstack.py, test_deploy_e2e.py,
test_schedule.py; ``step_pids`` twice):

- :func:`wait_for`: poll a condition until it holds or a deadline passes (never a fixed sleep);
- :func:`start_logged`: a process in a session of its own, its output appended to a log file;
- :func:`stop_tree` / :func:`kill_tree`: end a process's group and the groups of its
  descendants (a Prefect process worker starts each flow run in a session of its own, so
  signalling the worker's group alone would leave its flow runs and their steps running);
- :func:`step_pids`: the live processes of one job's steps on this host;
- :func:`free_port`: a free loopback port for a server to listen on.

Every process a test run starts is also ended by the session finalizer of
``tests/testprocs.py`` (it carries the run's marker), even when a test fails before its own
``stop_tree``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout: float, poll: float = 1.0) -> T:
    """``check()``'s first value that is not None; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def start_logged(
    args: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session (so :func:`stop_tree` can end its group), stdin
    closed, stdout and stderr appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(args),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), e.g. a worker's flow-run processes."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        todo += kids
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _groups(pid: int) -> set[int]:
    """The process group ``pid`` leads and those of its descendants."""
    groups = {pid}
    for child in children(pid):
        group = _pgid(child)
        if group:
            groups.add(group)
    return groups


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_tree(proc: subprocess.Popen[bytes], *, grace: float = 20.0) -> None:
    """SIGTERM the process's group and its descendants' groups, SIGKILL what is left after
    ``grace`` seconds; returns once every group is gone (or 5 s after the SIGKILL)."""
    groups = _groups(proc.pid)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        deadline = time.monotonic() + wait
        while True:
            proc.poll()  # reap it, or its zombie keeps the group "alive"
            if not any(_alive(g) for g in groups):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL at once: a host that dies with its worker and every flow run on it."""
    for group in _groups(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    proc.wait(timeout=30)


def kill_pids(pids: Sequence[int]) -> None:
    """SIGKILL these processes and their process groups (a flow run and its steps)."""
    for pid in pids:
        group = _pgid(pid)
        for kill, target in ((os.killpg, group), (os.kill, pid)):
            if target and target != os.getpgid(0):  # never our own group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(target, signal.SIGKILL)


def step_pids(job_id: str) -> list[int]:
    """Live processes of one job's steps on this host (they carry ``WSJOBS_JOB_ID``)."""
    marker = f"WSJOBS_JOB_ID={job_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids
