"""Turn a byte stream into log-sized text lines.

Scripts print anything: invalid UTF-8, megabyte-long lines, no final newline. Prefect
drops a log record over ``PREFECT_LOGGING_TO_API_MAX_LOG_SIZE`` (1,000,000 bytes), so
long lines are cut into pieces that each end with :data:`SPLIT_MARKER`; bytes that are
not UTF-8 become U+FFFD instead of failing the step.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

#: Longest piece of one line sent as one log record (characters; UTF-8 worst case 4x).
MAX_LINE_CHARS = 32_000
SPLIT_MARKER = " \u2026[line continues]"


class LineSplitter:
    """Feed bytes in, get complete (and capped) text lines out through ``emit``."""

    def __init__(self, emit: Callable[[str], None], max_chars: int = MAX_LINE_CHARS) -> None:
        self._emit = emit
        self._max = max_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""

    def feed(self, data: bytes) -> None:
        self._buffer += self._decoder.decode(data)
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._emit_capped(line.removesuffix("\r"))
        while len(self._buffer) > self._max:
            self._emit(self._buffer[: self._max] + SPLIT_MARKER)
            self._buffer = self._buffer[self._max :]

    def close(self) -> None:
        self._buffer += self._decoder.decode(b"", final=True)
        if self._buffer:
            self._emit_capped(self._buffer)
        self._buffer = ""

    def _emit_capped(self, line: str) -> None:
        while len(line) > self._max:
            self._emit(line[: self._max] + SPLIT_MARKER)
            line = line[self._max :]
        self._emit(line)
