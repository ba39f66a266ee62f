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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

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
        from workspaces_jobs.tasks.transports.ssh import SSHTransport  # type: ignore[import-not-found]

        return SSHTransport()
    raise ValueError(f"device {device.name!r}: unknown transport {device.transport!r}")
