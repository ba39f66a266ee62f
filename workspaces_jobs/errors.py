"""The error root and the one-line text shown to a user, the same in the CLI and the web view.

Every error the product raises on purpose derives from :class:`WsJobsError` and carries the
CLI exit code it ends with; anything else reaching the CLI's boundary is a bug and ends as
an internal error, never as "bad input". Exit codes 0-3 are job outcomes (Completed, Error,
Completed with errors, Canceled by the user), so errors start at 4::

    WsJobsError (70, internal)
    ├── BadInput (4)            the user's input is wrong; also a ValueError
    │   └── NotFound (4)        an unknown job, action, device, schedule...; a LookupError
    ├── ServerUnreachable (5)   the Prefect API (or the product's service) does not answer
    ├── HistoryLocked (6)       another process holds the history
    ├── HistoryCorrupt (7)      the history cannot be read
    ├── Forbidden (8)           the signed-in user's role does not allow the action
    └── WriteFailed (9)         a file could not be written: disk full, quota, I/O error

:func:`from_os_error` turns an ``OSError`` met while writing a file the user named into
one of these (``ENOSPC`` → :class:`WriteFailed`, a bad path → :class:`BadInput`).
"""

from __future__ import annotations

import errno

EXIT_BAD_INPUT = 4
EXIT_SERVER_UNREACHABLE = 5
EXIT_HISTORY_LOCKED = 6
EXIT_HISTORY_CORRUPT = 7
EXIT_FORBIDDEN = 8
EXIT_WRITE_FAILED = 9
EXIT_INTERNAL = 70


class WsJobsError(Exception):
    """Root of every error the product raises on purpose; ``exit_code`` is the CLI's."""

    exit_code: int = EXIT_INTERNAL


class BadInput(WsJobsError, ValueError):
    """The user's input is wrong; the message says what and how to fix it."""

    exit_code = EXIT_BAD_INPUT


class NotFound(BadInput, LookupError):
    """Something the user named does not exist."""


class ServerUnreachable(WsJobsError):
    """The Prefect API (or the product's service) does not answer."""

    exit_code = EXIT_SERVER_UNREACHABLE


class HistoryLocked(WsJobsError):
    """Another process holds the history; the message names it."""

    exit_code = EXIT_HISTORY_LOCKED


class HistoryCorrupt(WsJobsError):
    """The history cannot be read (truncated, checksum failure, not a history)."""

    exit_code = EXIT_HISTORY_CORRUPT


class Forbidden(WsJobsError):
    """The signed-in user's role does not allow the action."""

    exit_code = EXIT_FORBIDDEN


class WriteFailed(WsJobsError):
    """A file could not be written although its path is fine (disk full, quota, I/O error)."""

    exit_code = EXIT_WRITE_FAILED


#: errno values that say "the storage failed", not "the path is wrong".
_STORAGE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS")
    if hasattr(errno, name)
)


def from_os_error(exc: OSError, path: object) -> WsJobsError:
    """One line for an ``OSError`` met writing ``path``: names the errno (``ENOSPC``)."""
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc)
    tag = f" ({code})" if code else ""
    if exc.errno in _STORAGE_ERRNOS:
        return WriteFailed(
            f"cannot write {path}: {reason}{tag}; nothing was kept: free some space"
            " (or pick another place) and try again"
        )
    return BadInput(f"cannot write {path}: {reason}{tag}; pick another file name or folder")


def user_message(exc: BaseException) -> str:
    """The error's message as written.

    ``str(KeyError("x"))`` wraps the message in quotes; every other exception's message is
    printed unchanged (stripping quotes everywhere would mangle ``'x' is not a job id``).
    """
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)
