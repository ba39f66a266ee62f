"""Every process a test run starts ends with the run: when a test fails, when pytest is
interrupted (Ctrl-C, SIGTERM, SIGHUP), and, for a run killed outright, at the next run.

The run puts ``WSJOBS_TEST_RUN=<pytest pid>:<its start time>`` in ``os.environ`` before
anything starts, so every process started since inherits it: the Prefect server, workers,
executors, sshd, ``wsjobs ui``, whether or not it made its own process group (the product
starts servers, executors and steps in new sessions, out of pytest's group). Processes
whose working folder is under this run's temporary folder (local device sandboxes, whose
steps get a clean environment) count as the run's too.

:func:`end_run` finds them in ``/proc`` and ends each one's process group (SIGTERM, then
SIGKILL after a grace). :func:`reap_stale` ends the processes of earlier runs whose pytest
is gone, never those of a run still going (other people's runs on the same machine). A pid
is only signalled after its start time is checked, so a reused pid is never hit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

MARKER = "WSJOBS_TEST_RUN"


def start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (clock ticks since boot): a pid plus this is unique."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def run_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{start_time(pid)}"


def run_alive(run: str) -> bool:
    pid, _, started = run.partition(":")
    return pid.isdigit() and start_time(int(pid)) == started


def marker_of(pid: int) -> str | None:
    """The ``WSJOBS_TEST_RUN`` a process was started with (its initial environment)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = MARKER.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def _cwd_under(pid: int, folder: Path) -> bool:
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return cwd == folder or folder in cwd.parents


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def find(match: Callable[[int], bool]) -> dict[int, str]:
    """{pid: start time} of the processes ``match`` picks, never this process or its parents."""
    spare = {os.getpid()}
    pid = os.getppid()
    while pid > 1:
        spare.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = {}
    for pid in _all_pids():
        if pid in spare or not match(pid):
            continue
        started = start_time(pid)
        if started is not None:
            found[pid] = started
    return found


def end(processes: dict[int, str], grace: float = 5.0) -> list[int]:
    """SIGTERM each process's group (or the process alone when it shares pytest's group),
    wait up to ``grace`` seconds, SIGKILL what is left. Returns the pids that were live."""
    own_group = os.getpgrp()

    def still(pid: int) -> bool:
        return start_time(pid) == processes[pid] and not _zombie(pid)

    def signal_all(pids: Iterable[int], sig: int) -> None:
        for pid in pids:
            if not still(pid):
                continue
            try:
                group = os.getpgid(pid)
                if group != own_group and group in processes and still(group):
                    os.killpg(group, sig)
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    live = [pid for pid in processes if still(pid)]
    signal_all(live, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(still(pid) for pid in live):
        time.sleep(0.1)
    signal_all([pid for pid in live if still(pid)], signal.SIGKILL)
    return live


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def end_run(run: str, basetemp: Path | None = None, grace: float = 5.0) -> list[int]:
    """End every process of run ``run`` (and those working under ``basetemp``)."""

    def ours(pid: int) -> bool:
        if marker_of(pid) == run:
            return True
        return basetemp is not None and _cwd_under(pid, basetemp)

    return end(find(ours), grace)


def reap_stale(run: str, grace: float = 5.0) -> list[int]:
    """End the processes earlier runs left (their pytest is gone); spare live runs."""
    alive: dict[str, bool] = {}

    def stale(pid: int) -> bool:
        marker = marker_of(pid)
        if marker is None or marker == run:
            return False
        if marker not in alive:
            alive[marker] = run_alive(marker)
        return not alive[marker]

    return end(find(stale), grace)


def install(basetemp: Callable[[], Path | None]) -> str:
    """Mark this run and end its processes at exit and on SIGTERM/SIGHUP (SIGINT becomes
    KeyboardInterrupt, after which pytest finishes and the exit hook runs)."""
    import atexit

    run = run_id()
    os.environ[MARKER] = run

    def finish() -> None:
        end_run(run, basetemp(), grace=3.0)

    atexit.register(finish)

    def on_signal(signum: int, frame: object) -> None:
        finish()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    return run
