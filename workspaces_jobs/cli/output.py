"""Shared output helpers: consoles, JSON printing, one-line errors, status colours, safe text.

**User text is data, never markup or terminal control.** A job's info, an id, a device's
output or a file name can hold ``[/etc/ssl/private]`` (Rich markup: a crash or a lost
word), ``:warning:`` (an emoji code) or escape sequences (a window title, a cleared
screen, a hidden line). So both consoles here parse no markup and no emoji codes, every
plain string they render goes through :func:`plain` (escape sequences and control
characters removed), and styles come from :class:`rich.text.Text` objects built by
:func:`styled` / :func:`styled_status`. Device output keeps its colours and nothing else:
:func:`ansi_text` turns SGR sequences (``ESC[31m``) into styles and drops every other
sequence. JSON output needs none of this: ``json.dumps`` escapes control characters.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, NoReturn

from rich.console import Console
from rich.text import Text

from workspaces_jobs.errors import EXIT_BAD_INPUT
from workspaces_jobs.status import JobStatus
from workspaces_jobs.textsafe import CONTROL, SEQUENCE, SGR, terminal_safe

__all__ = [
    "EXIT_BAD_INPUT",
    "ansi_text",
    "console",
    "err_console",
    "fail",
    "fmt_time",
    "one_line",
    "plain",
    "print_error",
    "print_json",
    "print_warning",
    "safe_text",
    "styled",
    "styled_status",
]


def plain(value: object) -> str:
    """``value`` as text with every escape sequence and control character removed."""
    return terminal_safe(str(value))


def one_line(value: object) -> str:
    """:func:`plain` on one line (for ``error:``/``warning:`` lines and table cells)."""
    return " ".join(plain(value).split())


def safe_text(value: object, style: str | None = None) -> Text:
    """User text as a Rich ``Text``: printed literally, optionally in one style."""
    return Text(plain(value), style=style or "")


def styled(value: object, style: str) -> Text:
    """Literal text in a style (``styled(job_id, "bold")``)."""
    return safe_text(value, style)


def ansi_text(value: object) -> Text:
    """Device output: its SGR colours become styles, every other sequence is dropped."""
    text = str(value)
    kept: list[str] = []
    pos = 0
    for m in SEQUENCE.finditer(text):
        kept.append(CONTROL.sub("", text[pos : m.start()]))
        if SGR.fullmatch(m.group()):
            kept.append(m.group())
        pos = m.end()
    kept.append(CONTROL.sub("", text[pos:]))
    cleaned = "".join(kept)
    if "\x1b" not in cleaned:
        return Text(cleaned)
    return Text.from_ansi(cleaned)


class _SafeConsole(Console):
    """A console that renders plain strings as literal, control-free text."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(plain(text), **kwargs)


console: Console = _SafeConsole(highlight=False, markup=False, emoji=False)
err_console: Console = _SafeConsole(stderr=True, highlight=False, markup=False, emoji=False)

STATUS_STYLES = {
    JobStatus.PENDING.value: "grey62",
    JobStatus.IN_PROGRESS.value: "blue",
    JobStatus.COMPLETED.value: "green",
    JobStatus.COMPLETED_WITH_ERRORS.value: "dark_orange",
    JobStatus.ERROR.value: "red",
    JobStatus.CANCELED.value: "magenta",
}


def styled_status(status: str, reason: str | None = None) -> Text:
    """A job status in its colour, with the reason in brackets (``Error (inactivity)``)."""
    suffix = f" ({reason})" if reason else ""
    return safe_text(f"{status}{suffix}", STATUS_STYLES.get(status, "white"))


def print_error(message: object) -> None:
    """The one ``error:`` line on stderr."""
    err_console.print(
        Text.assemble(("error:", "red"), " ", one_line(message)), soft_wrap=True, highlight=False
    )


def print_warning(message: object) -> None:
    """One ``warning:`` line on stderr."""
    err_console.print(
        Text.assemble(("warning:", "yellow"), " ", one_line(message)),
        soft_wrap=True,
        highlight=False,
    )


def fail(message: str, *, code: int = EXIT_BAD_INPUT) -> NoReturn:
    print_error(message)
    sys.exit(code)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2) + "\n")


def fmt_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"
