"""The one rule for user text that reaches a terminal: no escape sequence, no control.

Device output, job info, ids and file names are untrusted: an escape sequence can retitle
the window, clear the screen, hide a line or plant a hyperlink. Everything the CLI prints
and every log line the views colour goes through these patterns, so the rule lives once
(the CLI's Rich helpers in :mod:`workspaces_jobs.cli.output` and the log renderers in
:mod:`workspaces_jobs.logview` both import it). No dependencies: cheap to import anywhere.
"""

from __future__ import annotations

import re

# ECMA-48 sequences: OSC (window title, hyperlinks) ends at BEL or ST; DCS/SOS/PM/APC end at
# ST; CSI is ESC [ params intermediates final; the rest are ESC + one or two characters.
OSC = r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
STRING = r"\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
CSI = r"\x1b\[[0-?]*[ -/]*[@-~]"
ESC2 = r"\x1b[ -/]*[0-~]"
SEQUENCE = re.compile(f"{OSC}|{STRING}|{CSI}|{ESC2}")
#: SGR (colour) sequences: the only ones device output may keep, as styles or CSS classes.
SGR = re.compile(r"\x1b\[[0-9;:]*m")
#: C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI on some terminals).
CONTROL_CHARS = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
CONTROL = re.compile(CONTROL_CHARS)


def terminal_safe(text: str) -> str:
    """``text`` with every escape sequence and control character (but tab, newline) removed."""
    if "\x1b" not in text and text.isprintable():
        return text
    return CONTROL.sub("", SEQUENCE.sub("", text))
