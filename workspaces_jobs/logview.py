"""Log lines for people: ANSI colours, terminal safety, per-step tails. Pure functions.

Device output is untrusted text. It may carry ANSI escape sequences: SGR colour codes
(``ESC[32m``) that scripts print on purpose, and anything else (cursor moves, screen
clears, OSC 8 links, a title change) that must never reach an operator's terminal. So:

* :func:`terminal_safe` removes every escape sequence and control character but tab
  (the CLI prints only this);
* :func:`sgr_segments` splits a line into ``(text, classes)`` runs by its SGR codes, and
  :func:`ansi_html` renders them as escaped text in ``<span class="a-…">`` (CSS classes,
  not inline styles: the pages' Content-Security-Policy forbids inline styles). Anything
  that is not SGR is dropped.
* :func:`group_logs` keeps the last ``cap`` lines of each step (the CLI's ``show`` and
  the web's Logs tab) and counts the rest.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from workspaces_jobs.jobfacts import JobFact, LogFact, StepFact
from workspaces_jobs.textsafe import CONTROL_CHARS, CSI, ESC2, OSC, STRING, terminal_safe

__all__ = ["ansi_html", "group_logs", "select_lines", "sgr_segments", "terminal_safe"]

# An SGR sequence (its parameters captured), any other sequence, or a control character.
_SGR_OR_OTHER = re.compile(
    f"(\\x1b\\[([0-9;:]*)m)|{OSC}|{STRING}|{CSI}|{ESC2}|\\x1b|{CONTROL_CHARS}"
)


@dataclass(frozen=True)
class _Style:
    fg: str | None = None
    bg: str | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False

    def classes(self) -> tuple[str, ...]:
        out = []
        if self.fg:
            out.append(f"a-fg-{self.fg}")
        if self.bg:
            out.append(f"a-bg-{self.bg}")
        for flag in ("bold", "dim", "italic", "underline"):
            if getattr(self, flag):
                out.append(f"a-{flag}")
        return tuple(out)


_COLOURS = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")


def _colour(n: int) -> str | None:
    """A 256-colour index as one of the 16 named colours (others: no colour)."""
    if 0 <= n < 8:
        return _COLOURS[n]
    if 8 <= n < 16:
        return f"bright-{_COLOURS[n - 8]}"
    return None


def _apply(style: _Style, params: str) -> _Style:
    codes = [int(c) if c.isdigit() else 0 for c in re.split("[;:]", params)] if params else [0]
    s = style
    i = 0
    while i < len(codes):
        c = codes[i]
        if c == 0:
            s = _Style()
        elif c in (1, 2, 3, 4):
            s = _replace(s, {1: "bold", 2: "dim", 3: "italic", 4: "underline"}[c], True)
        elif c == 22:
            s = _replace(_replace(s, "bold", False), "dim", False)
        elif c == 23:
            s = _replace(s, "italic", False)
        elif c == 24:
            s = _replace(s, "underline", False)
        elif 30 <= c <= 37:
            s = _replace(s, "fg", _COLOURS[c - 30])
        elif 90 <= c <= 97:
            s = _replace(s, "fg", f"bright-{_COLOURS[c - 90]}")
        elif 40 <= c <= 47:
            s = _replace(s, "bg", _COLOURS[c - 40])
        elif 100 <= c <= 107:
            s = _replace(s, "bg", f"bright-{_COLOURS[c - 100]}")
        elif c == 39:
            s = _replace(s, "fg", None)
        elif c == 49:
            s = _replace(s, "bg", None)
        elif c in (38, 48):
            key = "fg" if c == 38 else "bg"
            mode = codes[i + 1] if i + 1 < len(codes) else None
            if mode == 5:
                s = _replace(s, key, _colour(codes[i + 2]) if i + 2 < len(codes) else None)
                i += 2
            elif mode == 2:
                s = _replace(s, key, None)  # true colour: not mapped, shown plain
                i += 4
        i += 1
    return s


def _replace(style: _Style, key: str, value: Any) -> _Style:
    from dataclasses import replace

    return replace(style, **{key: value})


def sgr_segments(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """``text`` as runs of ``(plain text, CSS classes)``; non-SGR escapes are dropped."""
    if "\x1b" not in text and text.isprintable():
        return [(text, ())] if text else []
    out: list[tuple[str, tuple[str, ...]]] = []
    style = _Style()
    pos = 0
    for m in _SGR_OR_OTHER.finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], style.classes()))
        if m.group(1) is not None:
            style = _apply(style, m.group(2))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], style.classes()))
    return [(t, c) for t, c in out if t]


def ansi_html(text: str) -> Markup:
    """A log line as HTML: escaped text, SGR colours as ``<span class>``."""
    parts = []
    for chunk, classes in sgr_segments(text):
        if classes:
            parts.append(Markup('<span class="{}">{}</span>').format(" ".join(classes), chunk))
        else:
            parts.append(escape(chunk))
    return Markup("").join(parts)


# --- per-step tails ---------------------------------------------------------------------


@dataclass
class StepLines:
    step: str
    lines: list[LogFact] = field(default_factory=list)
    hidden: int = 0  # earlier lines left out (over the cap)


@dataclass
class LogGroup:
    """The job's own lines, then each device's steps in order."""

    device: str | None  # None: lines of the job itself (runner, status, cancel notes)
    steps: list[StepLines] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(s.lines) + s.hidden for s in self.steps)


def step_order(step: StepFact) -> tuple[str, int, str]:
    return (step.device, step.position if step.position is not None else 10**6, step.step)


def _capped(step: str, lines: list[LogFact], cap: int | None) -> StepLines:
    if cap is None or len(lines) <= cap:
        return StepLines(step, lines)
    return StepLines(step, lines[len(lines) - cap :] if cap else [], hidden=len(lines) - cap)


def group_logs(job: JobFact, *, cap: int | None) -> list[LogGroup]:
    """Log lines per device, per step (in step order), each in time order, the last
    ``cap`` lines of each step (``None``: all)."""
    order = {(s.device, s.step): step_order(s) for s in job.steps}
    job_lines: list[LogFact] = []
    per_device: dict[str, dict[str, list[LogFact]]] = defaultdict(lambda: defaultdict(list))
    for line in sorted(job.logs, key=lambda entry: entry.ts):
        if line.device is None:
            job_lines.append(line)
        else:
            per_device[line.device][line.step or "-"].append(line)
    groups = []
    if job_lines:
        groups.append(LogGroup(None, [_capped("job", job_lines, cap)]))
    for device in sorted(per_device):
        steps = per_device[device]
        names = sorted(steps, key=lambda s: order.get((device, s), (device, 10**6, s)))
        groups.append(LogGroup(device, [_capped(s, steps[s], cap) for s in names]))
    return groups


def select_lines(
    lines: Iterable[LogFact],
    *,
    devices: Iterable[str] = (),
    steps: Iterable[str] = (),
    levels: Iterable[str] = (),
) -> list[LogFact]:
    """The lines of these devices, steps and levels (each empty = any)."""
    dev, stp = set(devices), set(steps)
    lvl = {v.upper() for v in levels}
    return [
        line
        for line in lines
        if (not dev or line.device in dev)
        and (not stp or line.step in stp)
        and (not lvl or line.level.upper() in lvl)
    ]
