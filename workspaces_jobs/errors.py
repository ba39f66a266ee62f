"""The one-line text shown to a user for an error, the same in the CLI and the web view."""

from __future__ import annotations


def user_message(exc: BaseException) -> str:
    """The error's message as written.

    ``str(KeyError("x"))`` wraps the message in quotes; every other exception's message is
    printed unchanged (stripping quotes everywhere would mangle ``'x' is not a job id``).
    """
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)
