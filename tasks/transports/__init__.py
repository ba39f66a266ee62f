"""Transports run one step's script on one device and stream its output line by line.

Every transport has the same contract (:class:`Transport`), so the step task does not
care whether a device is a local sandbox or a remote host:

* ``run`` feeds the script to the step's shell with the parameters in the environment
  (never pasted into the script text), calls ``on_line(stream, text)`` for every output
  line as it arrives, and returns a :class:`StepResult`;
* a step over its ``timeout``, or silent for longer than ``inactivity``, is stopped with
  its whole process tree, and the result says which limit it hit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from workspaces_jobs.catalog import Device

LineSink = Callable[[str, str], None]


@dataclass(frozen=True)
class StepResult:
    exit_code: int
    timed_out: bool = False
    inactive: bool = False
    error: str | None = None  # the transport could not run the step at all (unreachable, ...)


class Transport(Protocol):
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
    ) -> StepResult: ...


def transport_for(device: Device) -> Transport:
    """The transport that reaches a device (imported lazily: SSH pulls in asyncssh)."""
    if device.transport == "local":
        from workspaces_jobs.tasks.transports.local import LocalTransport

        return LocalTransport()
    if device.transport == "ssh":
        from workspaces_jobs.tasks.transports.ssh import SSHTransport

        return SSHTransport()
    raise ValueError(f"device {device.name!r}: unknown transport {device.transport!r}")


_SSH_MODULE = "workspaces_jobs.tasks.transports.ssh"


def _ssh_call(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``ssh.<name>`` if the SSH transport was used in this process, else do nothing.

    Nothing is imported for jobs without SSH devices; a module another thread is still
    importing has no connections yet, so it is skipped too.
    """
    module = sys.modules.get(_SSH_MODULE)
    function = getattr(module, name, None)
    return function(*args, **kwargs) if function is not None else None


def release_device(job_id: str, device: str) -> None:
    """A device has no more steps in this job: its transport frees what it holds."""
    _ssh_call("release_device", job_id, device)


def close_job(job_id: str) -> None:
    """The job's steps are over: close every connection it opened."""
    _ssh_call("close_job", job_id)


def terminate_all(*, refuse_new: bool = False) -> int:
    """Stop every step this process runs, local and remote (a job kill); see local's."""
    from workspaces_jobs.tasks.transports import local

    count = local.terminate_all(refuse_new=refuse_new)
    return count + int(_ssh_call("terminate_all", refuse_new=refuse_new) or 0)


def allow_new() -> None:
    """A new job starts in this process: undo ``terminate_all(refuse_new=True)``."""
    from workspaces_jobs.tasks.transports import local

    local.allow_new()
    _ssh_call("allow_new")
