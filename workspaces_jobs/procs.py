"""Which process is which: a PID alone is not an identity.

A PID written to a file outlives the process: after it exits (a crash, a reboot) the
kernel hands the number to the next process, and a signal sent to "the server's PID"
lands on an unrelated program. So every process ``wsjobs`` starts and later signals
is recorded as a :class:`ProcessRecord` — PID, the kernel's start time of that PID
and the exact command line — and signalled only when all three still match.

Linux reads both from ``/proc/PID/stat`` (field 22, clock ticks since boot) and
``/proc/PID/cmdline``; elsewhere ``ps`` gives the start time and command. Nothing here
imports Prefect.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProcessRecord:
    """A process as it was when started: enough to recognise it (or its absence) later."""

    pid: int
    started: str  # the kernel's start time of the PID, as read by start_time()
    argv: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started, "argv": list(self.argv)}

    @classmethod
    def from_dict(cls, data: Any) -> ProcessRecord | None:
        """None for anything that is not a complete record (an older or damaged file)."""
        try:
            rec = cls(int(data["pid"]), str(data["started"]), tuple(map(str, data["argv"])))
        except (TypeError, KeyError, ValueError):
            return None
        return rec if rec.pid > 0 and rec.argv else None  # never "every process" (0, -1)


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` (an opaque string), or None when no such process exists."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        return _ps(pid, "lstart")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19]  # field 22 overall: starttime


def command_line(pid: int) -> tuple[str, ...] | None:
    if pid <= 0:
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        out = _ps(pid, "command")
        return tuple(out.split()) if out else None
    except OSError:
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def _ps(pid: int, field: str) -> str | None:
    try:
        out = subprocess.run(
            ["ps", "-o", f"{field}=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def record(proc: subprocess.Popen[Any], argv: list[str] | tuple[str, ...]) -> ProcessRecord:
    """The record of a process just started (``Popen`` returns after its exec)."""
    return ProcessRecord(proc.pid, start_time(proc.pid) or "", tuple(argv))


def _matches(rec: ProcessRecord) -> bool:
    if not rec.started:
        return False
    if start_time(rec.pid) != rec.started:
        return False
    argv = command_line(rec.pid)
    if argv is None:
        return False
    if Path("/proc/self/stat").exists():
        return argv == rec.argv
    return " ".join(argv).endswith(" ".join(rec.argv[1:]))  # ps: executable path may differ


def is_running(rec: ProcessRecord) -> bool:
    """True when the recorded process is still the one running under its PID (not a zombie)."""
    if not _matches(rec):
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{rec.pid}/stat").read_text()
        if state[state.rindex(")") + 2 :].startswith("Z"):
            return False
    return True


def describe(pid: int) -> str:
    """What runs under ``pid`` now, for a notice: its command line or "nothing"."""
    argv = command_line(pid)
    if argv is None:
        return "no process"
    text = " ".join(argv)
    return f"`{text[:80]}…`" if len(text) > 80 else f"`{text}`"


def stop_group(rec: ProcessRecord, *, grace: float = 15.0) -> bool:
    """SIGTERM then SIGKILL the process group of ``rec`` (started with its own session).

    Signals only while the PID is still the recorded process; returns True when it is
    gone (or was never there), False when it survived SIGKILL.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not is_running(rec):
            return True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(rec.pid, os.WNOHANG)
            if not is_running(rec):
                return True
            time.sleep(0.1)
    return not is_running(rec)
