"""How job facts are written into Prefect objects, and read back.

Prefect is the operational store: everything the history sync, ``wsjobs show`` and the
notifier know about a job comes from flow runs, task runs, logs and artifacts. This
module is the one place that fixes the encoding, so writers (flows, tasks) and readers
(sync, CLI) cannot drift apart:

* flow run tags: ``workspaces`` (marks our jobs), ``action:<name>``, ``owner:<name>``,
  ``rerun-of:<job id>``, ``canceled-by:<name>``;
* flow run parameters: ``target``, ``info``, ``owner``, ``params``, ``rerun_of``;
* task run name ``<step>[<device>]`` and tags ``device:<d>``, ``step:<s>``,
  ``position:<n>``, ``critical:<true|false>``;
* step log lines ``<device> <step> <stream> | <text>`` with stream ``out``/``err``/``sys``;
* a failed step's state message ``exit code <n>: ...``;
* one progress artifact per job whose key is ``job-progress-<job id>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

JOB_TAG = "workspaces"
ACTION_TAG = "action:"
OWNER_TAG = "owner:"
RERUN_TAG = "rerun-of:"
CANCELED_BY_TAG = "canceled-by:"
DEVICE_TAG = "device:"
STEP_TAG = "step:"
POSITION_TAG = "position:"
CRITICAL_TAG = "critical:"

STREAM_OUT = "out"
STREAM_ERR = "err"
STREAM_SYS = "sys"  # lines the runner itself writes about a step (start, exit, timeout)

_LOG_RE = re.compile(
    r"^(?P<device>\S+) (?P<step>\S+) (?P<stream>out|err|sys) \| (?P<text>.*)$", re.S
)
_EXIT_RE = re.compile(r"exit code (-?\d+)")


def tag_value(tags: Iterable[str], prefix: str) -> str | None:
    """The value of the first ``prefix<value>`` tag, or None."""
    for tag in tags:
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return None


def job_tags(*, action: str, owner: str, rerun_of: str | None = None) -> list[str]:
    tags = [JOB_TAG, f"{ACTION_TAG}{action}", f"{OWNER_TAG}{owner}"]
    if rerun_of:
        tags.append(f"{RERUN_TAG}{rerun_of}")
    return tags


def step_task_name(step: str, device: str) -> str:
    """Task runs read like the product's Workspaces tab in the Prefect UI: ``patch[dev01]``."""
    return f"{step}[{device}]"


def step_tags(*, device: str, step: str, position: int, critical: bool) -> list[str]:
    return [
        f"{DEVICE_TAG}{device}",
        f"{STEP_TAG}{step}",
        f"{POSITION_TAG}{position}",
        f"{CRITICAL_TAG}{'true' if critical else 'false'}",
    ]


@dataclass(frozen=True)
class StepRef:
    device: str
    step: str
    position: int
    critical: bool


def parse_step_tags(tags: Iterable[str]) -> StepRef | None:
    """Device/step/position/critical of a step task run, or None for other task runs."""
    tags = list(tags)
    device, step = tag_value(tags, DEVICE_TAG), tag_value(tags, STEP_TAG)
    if device is None or step is None:
        return None
    position = tag_value(tags, POSITION_TAG)
    return StepRef(
        device=device,
        step=step,
        position=int(position) if position and position.isdigit() else 0,
        critical=tag_value(tags, CRITICAL_TAG) != "false",
    )


def log_message(device: str, step: str, stream: str, text: str) -> str:
    return f"{device} {step} {stream} | {text}"


@dataclass(frozen=True)
class LogLine:
    device: str | None
    step: str | None
    stream: str | None
    text: str


def parse_log_message(message: str) -> LogLine:
    """Split a step log line into its tags; other lines (hooks, Prefect's own) keep None tags."""
    m = _LOG_RE.match(message)
    if not m:
        return LogLine(None, None, None, message)
    return LogLine(m["device"], m["step"], m["stream"], m["text"])


def exit_message(code: int, detail: str) -> str:
    return f"exit code {code}: {detail}"


def parse_exit_code(message: str | None) -> int | None:
    m = _EXIT_RE.search(message or "")
    return int(m.group(1)) if m else None


def progress_key(job_id: str) -> str:
    return f"job-progress-{job_id}"
