"""How job facts are written into Prefect objects, and read back.

Prefect is the operational store: everything the history sync, ``wsjobs show`` and the
notifier know about a job comes from flow runs, task runs, logs and artifacts. This
module is the one place that fixes the encoding, so writers (flows, tasks) and readers
(sync, CLI) cannot drift apart:

* flow run name ``<action>: <info>`` (``<action>`` without info), see :func:`job_name`;
* flow run tags: ``workspaces`` (marks our jobs), ``action:<name>``, ``owner:<name>``,
  ``rerun-of:<job id>``, ``canceled-by:<name>``, ``secret:<param>`` (a parameter whose
  value readers show as ``***``), ``recovered-after-inactivity`` (the job
  was Error (inactivity), then finished by itself: its final state is the real outcome);
* flow run parameters: ``target``, ``info``, ``owner``, ``params``, ``rerun_of``;
* task run name ``<step>[<device>]`` — and no task run tags: Prefect acquires a tag
  concurrency slot through the API for every tag of every task run (measured: it made
  a 300-step job 10x slower), so step facts travel in the name and the final state;
* a finished step's state message
  ``exit code <n> · step <position> of <total> · critical|non-critical · <detail>``
  (position counts from 1);
* step log lines ``<device> <step> <stream> | <text>`` with stream ``out``/``err``/``sys``;
* one progress artifact per job whose key is ``job-progress-<job id>``;
* a shard of a job spread over workers (``flows/spread.py``) is a flow run tagged
  ``shard-of:<job id>`` and nothing else (no ``workspaces``): it is part of that job.
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
RECOVERED_TAG = "recovered-after-inactivity"
SHARD_TAG = "shard-of:"  # a shard of a spread job: part of that job, not a job itself
SCHEDULE_TAG = "schedule:"  # on a schedule's deployment, so on every run it creates (#18)
SECRET_TAG = "secret:"  # one per parameter declared ``secret: true`` (its name only)

STREAM_OUT = "out"
STREAM_ERR = "err"
STREAM_SYS = "sys"  # lines the runner itself writes about a step (start, exit, timeout)

_LOG_RE = re.compile(
    r"^(?P<device>\S+) (?P<step>\S+) (?P<stream>out|err|sys) \| (?P<text>.*)$", re.S
)
_TASK_NAME_RE = re.compile(r"^(?P<step>[^\[\]\s]+)\[(?P<device>[^\[\]\s]+)\]$")
_STEP_MSG_RE = re.compile(
    r"^exit code (?P<code>-?\d+) · step (?P<pos>\d+) of (?P<total>\d+) · "
    r"(?P<crit>critical|non-critical) · (?P<detail>.*)$",
    re.S,
)


def tag_value(tags: Iterable[str], prefix: str) -> str | None:
    """The value of the first ``prefix<value>`` tag, or None."""
    for tag in tags:
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return None


def is_shard(tags: Iterable[str] | None) -> bool:
    return any(t.startswith(SHARD_TAG) for t in tags or ())


def job_tags(
    *, action: str, owner: str, rerun_of: str | None = None, secret_params: Iterable[str] = ()
) -> list[str]:
    tags = [JOB_TAG, f"{ACTION_TAG}{action}", f"{OWNER_TAG}{owner}"]
    if rerun_of:
        tags.append(f"{RERUN_TAG}{rerun_of}")
    tags += [f"{SECRET_TAG}{name}" for name in sorted(secret_params)]
    return tags


def job_name(action: str, info: str | None) -> str:
    """The flow run name of a job, however it was created (``wsjobs run``, a schedule)."""
    return f"{action}: {info[:60]}" if info else action


def step_task_name(step: str, device: str) -> str:
    """Task runs read like the product's Workspaces tab in the Prefect UI: ``patch[dev01]``."""
    return f"{step}[{device}]"


@dataclass(frozen=True)
class StepRef:
    """What a step task run says about itself; position/critical/exit code once finished."""

    device: str
    step: str
    position: int | None = None
    critical: bool | None = None
    exit_code: int | None = None


def step_message(code: int, *, position: int, total: int, critical: bool, detail: str) -> str:
    kind = "critical" if critical else "non-critical"
    return f"exit code {code} · step {position} of {total} · {kind} · {detail}"


def parse_step(task_run_name: str, state_message: str | None) -> StepRef | None:
    """Device/step of a step task run (None for other task runs), plus what its end says."""
    name = _TASK_NAME_RE.match(task_run_name or "")
    if not name:
        return None
    msg = _STEP_MSG_RE.match(state_message or "")
    if not msg:
        return StepRef(device=name["device"], step=name["step"])
    return StepRef(
        device=name["device"],
        step=name["step"],
        position=int(msg["pos"]),
        critical=msg["crit"] == "critical",
        exit_code=int(msg["code"]),
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


def progress_key(job_id: str) -> str:
    return f"job-progress-{job_id}"
