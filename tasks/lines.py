"""Turn a byte stream into log-sized text lines.

Scripts print anything: invalid UTF-8, megabyte-long lines, no final newline. Prefect
drops a log record over ``PREFECT_LOGGING_TO_API_MAX_LOG_SIZE`` (1,000,000 bytes), so
long lines are cut into pieces that each end with :data:`SPLIT_MARKER`; bytes that are
not UTF-8 become U+FFFD instead of failing the step. Known secret values in a line
become ``***`` (:class:`Masker`).
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterable, Mapping

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


# --- secrets masked at the source --------------------------------------------------------

#: What a secret value becomes in a step's log line.
MASK = "***"
#: Shorter values are not masked: "1" or "ab" would blank out ordinary output.
MIN_SECRET_CHARS = 4


class Masker:
    """Replace known secret values in a line with :data:`MASK`.

    Applied where step lines are emitted (``run_step``), so Prefect's logs and everything
    built from them (the history, exports, emails, the web view) never hold the value.
    Per line it costs one substring search per secret (``str.__contains__``, in C) and a
    replace only on a hit; with no secrets it returns the line untouched.
    """

    __slots__ = ("values",)

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        found = {v for v in values if v and len(v) >= MIN_SECRET_CHARS}
        # Longest first: a secret that contains another is masked whole.
        self.values: tuple[str, ...] = tuple(sorted(found, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self.values)

    def with_values(self, values: Iterable[str | None]) -> Masker:
        return Masker((*self.values, *values))


_maskers: dict[str, Masker] = {}


def register_masker(job_id: str, masker: Masker) -> None:
    """The job's secrets, set by the flow before its steps run (one per job id: a worker
    process may run several jobs)."""
    _maskers[job_id] = masker


def forget_masker(job_id: str) -> None:
    _maskers.pop(job_id, None)


def masker_for(job_id: str | None) -> Masker:
    """The job's masker, else one with this process's own credentials."""
    found = _maskers.get(job_id or "")
    return found if found is not None else Masker(process_secrets())


#: Environment variables whose values are credentials of this product or of Prefect.
SECRET_VARIABLES = (
    "WSJOBS_SMTP_PASSWORD",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_API_AUTH_STRING",
)


def process_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """This process's credentials: the SMTP password, Prefect's API key and auth string
    (from the environment or the active Prefect profile); an auth string ``user:pass``
    also masks its password alone."""
    env = os.environ if environ is None else environ
    values = [env.get(name) for name in SECRET_VARIABLES]
    try:
        from prefect.settings import get_current_settings

        api = get_current_settings().api
        for secret in (api.key, api.auth_string):
            values.append(secret.get_secret_value() if secret is not None else None)
    except Exception:  # settings unreadable: the environment still counts
        pass
    out: list[str] = []
    for value in values:
        if value:
            out.append(value)
            if ":" in value:
                out.append(value.split(":", 1)[1])
    return out
