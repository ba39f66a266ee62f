"""Shared output helpers: rich consoles, JSON printing, one-line errors, status colours."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, NoReturn

from rich.console import Console

from workspaces_jobs.status import JobStatus

#: Exit code for bad input (unknown action/device/parameter, bad job id, ...).
EXIT_BAD_INPUT = 4

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

STATUS_STYLES = {
    JobStatus.PENDING.value: "grey62",
    JobStatus.IN_PROGRESS.value: "blue",
    JobStatus.COMPLETED.value: "green",
    JobStatus.COMPLETED_WITH_ERRORS.value: "dark_orange",
    JobStatus.ERROR.value: "red",
    JobStatus.CANCELED.value: "magenta",
}


def styled_status(status: str, reason: str | None = None) -> str:
    style = STATUS_STYLES.get(status, "white")
    suffix = f" ({reason})" if reason else ""
    return f"[{style}]{status}{suffix}[/{style}]"


def fail(message: str, *, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    sys.exit(code)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2) + "\n")


def fmt_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"
