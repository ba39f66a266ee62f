"""Transports run one step's script on one device and stream its output line by line.

Every transport keeps one small contract (:class:`Transport`: open, run, terminate,
close), so the step task does not care whether a device is a local sandbox or a remote
host, and one contract suite (``tests/test_transports.py``) runs against each of them:

* ``run`` feeds the script to the step's shell with the parameters in the environment
  (never pasted into the script text), calls ``on_line(stream, text)`` for every output
  line as it arrives, and returns a :class:`StepResult`; a step over its ``timeout``, or
  silent for longer than ``inactivity``, is stopped with its whole process tree, and the
  result says which limit it hit;
* ``terminate`` stops every step the transport runs in this process (a job kill) and,
  with ``refuse_new``, makes steps about to start refuse to; ``open`` lifts that when the
  next job starts;
* ``close`` frees what a job (or one of its devices) holds, e.g. SSH connections.

A transport is an object that owns its state (processes, connections, its event loop).
The :class:`Registry` maps the inventory's ``transport:`` names to factories and makes
one transport of each kind per process, on first use (the SSH one imports asyncssh, so
a job without SSH devices never does); the job-wide calls (:func:`terminate_all`,
:func:`close_job`, ...) go to the transports this process has made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from workspaces_jobs.catalog import Device

LineSink = Callable[[str, str], None]

#: Exit code a step reports when it was refused or stopped because its job was stopped.
STOPPED_EXIT_CODE = 143


@dataclass(frozen=True)
class StepResult:
    exit_code: int
    timed_out: bool = False
    inactive: bool = False
    error: str | None = None  # the transport could not run the step at all (unreachable, ...)


class Transport(Protocol):
    """What the step task and the job's lifecycle ask of a transport."""

    def open(self) -> None:
        """A new job starts in this process: steps may start (undoes a refusing terminate)."""

    def run(
        self,
        device: Device,
        *,
        script: str,
        shell: str,
        env: Mapping[str, str],
        on_line: LineSink,
        timeout: float | None,
        inactivity: float | None,
    ) -> StepResult:
        """Run one step on ``device``; ``env["WSJOBS_JOB_ID"]`` names its job."""
        ...

    def terminate(self, *, refuse_new: bool = False) -> int:
        """Stop every step this transport runs in this process; return how many."""
        ...

    def close(self, job_id: str, device: str | None = None) -> None:
        """Free what ``job_id`` holds on ``device`` (or on every device)."""


def _local() -> Transport:
    from workspaces_jobs.tasks.transports.local import LocalTransport

    return LocalTransport()


def _ssh() -> Transport:
    # Imported on first use: asyncssh costs an import a job without SSH devices skips.
    from workspaces_jobs.tasks.transports.ssh import SSHTransport

    return SSHTransport()


class Registry:
    """Transport names → factories, and the one transport of each name this process made."""

    def __init__(self, factories: Mapping[str, Callable[[], Transport]]) -> None:
        self.factories = dict(factories)
        self._made: dict[str, Transport] = {}
        self._lock = threading.Lock()
        self._refusing = False

    def register(self, name: str, factory: Callable[[], Transport]) -> None:
        self.factories[name] = factory

    def get(self, name: str) -> Transport:
        """The process's transport called ``name`` (made now if it is the first use).

        One made while a job is being stopped starts refusing, as the others do.
        """
        with self._lock:
            made = self._made.get(name)
            if made is None:
                factory = self.factories.get(name)
                if factory is None:
                    raise ValueError(f"unknown transport {name!r}")
                made = self._made[name] = factory()
                if self._refusing:
                    made.terminate(refuse_new=True)  # nothing runs on it yet: only refuses
            return made

    def made(self) -> list[Transport]:
        with self._lock:
            return list(self._made.values())

    def open(self) -> None:
        with self._lock:
            self._refusing = False
        for transport in self.made():
            transport.open()

    def terminate(self, *, refuse_new: bool = False) -> int:
        with self._lock:
            if refuse_new:
                self._refusing = True
            made = list(self._made.values())
        return sum(t.terminate(refuse_new=refuse_new) for t in made)

    def close(self, job_id: str, device: str | None = None) -> None:
        for transport in self.made():
            transport.close(job_id, device)


#: The transports of this process.
TRANSPORTS = Registry({"local": _local, "ssh": _ssh})


def transport_for(device: Device) -> Transport:
    """The transport that reaches a device."""
    try:
        return TRANSPORTS.get(device.transport)
    except ValueError as exc:
        raise ValueError(f"device {device.name!r}: {exc}") from None


def release_device(job_id: str, device: str) -> None:
    """A device has no more steps in this job: its transport frees what it holds."""
    TRANSPORTS.close(job_id, device)


def close_job(job_id: str) -> None:
    """The job's steps are over: close every connection it opened."""
    TRANSPORTS.close(job_id)


def terminate_all(*, refuse_new: bool = False) -> int:
    """Stop every step this process runs, local and remote (a job kill)."""
    return TRANSPORTS.terminate(refuse_new=refuse_new)


def allow_new() -> None:
    """A new job starts in this process: undo ``terminate_all(refuse_new=True)``."""
    TRANSPORTS.open()
