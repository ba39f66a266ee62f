"""The CLI's one error boundary: any failure becomes one ``error:`` line and an exit code.

Exit codes 0-3 are job outcomes (``wsjobs run``: Completed, Error, Completed with errors,
Canceled by the user), so no failure may end with them: a usage mistake that Click would
end with 2 ("Completed with errors"!) ends with 4 here, and an exception the product did
not raise on purpose (a ``KeyError`` from a bug) is an internal error, 70, whose line says
to re-run with ``--debug`` — never "bad input".

Exceptions from the parts underneath are named once, here (httpx's transport errors are
"the server does not answer", DuckDB's damaged-file errors are "history corrupt", an
``OSError`` names its errno), searching the whole ``__cause__``/``__context__`` chain so a
wrapper (Prefect's client, an ``anyio`` task group) does not hide them.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import typer

from workspaces_jobs.errors import (
    EXIT_BAD_INPUT,
    BadInput,
    Forbidden,
    HistoryLocked,
    ServerUnreachable,
    WsJobsError,
    from_os_error,
    user_message,
)


def _click_exceptions() -> Any:
    """Typer >= 0.2x carries its own copy of Click and raises that copy's exceptions;
    older ones raise the ``click`` package's."""
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("neither typer._click nor click is installed")


click_exceptions = _click_exceptions()


#: Ctrl+C: the shell's convention (128 + SIGINT).
EXIT_INTERRUPTED = 130


def run_guarded(app: typer.Typer, args: list[str], *, debug: bool = False) -> int:
    """Run the Typer ``app`` on ``args``; return the exit code, having printed any error."""
    from workspaces_jobs.cli.output import console, print_error

    _warnings_to_stderr()
    try:
        result = app(args=args, prog_name="wsjobs", standalone_mode=False)
    except SystemExit as exc:  # fail() and sys.exit() in commands: already reported
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_BAD_INPUT)
    except click_exceptions.NoArgsIsHelpError as exc:
        console.print(exc.ctx.get_help(), markup=False, highlight=False)
        return 0
    except click_exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "wsjobs"
        print_error(f"{exc.format_message()} (see `{where} --help`)")
        return EXIT_BAD_INPUT
    except click_exceptions.ClickException as exc:
        print_error(exc.format_message())
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, typer.Abort):
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `wsjobs list | head`: the reader left; say nothing
        _silence_stdout()
        return 0
    except Exception as exc:
        error = translate(exc)
        if debug:
            traceback.print_exception(exc)
        print_error(user_message(error))
        return error.exit_code
    if isinstance(result, int) and not isinstance(result, bool):
        return result  # typer.Exit(code) in standalone_mode=False comes back as a return
    return 0


#: Loggers whose warnings a CLI user must see (a bad stored setting that was ignored).
WARNING_LOGGERS = ("workspaces_jobs.reporting.saved", "workspaces_jobs.activity")


class _WarningLines(logging.Handler):
    """Each distinct warning once, as a ``warning:`` line on stderr."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        from workspaces_jobs.cli.output import print_warning

        message = record.getMessage()
        if message not in self.seen:
            self.seen.add(message)
            print_warning(message)


def _warnings_to_stderr() -> None:
    handler = _WarningLines()
    for name in WARNING_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _WarningLines)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False


def translate(exc: BaseException) -> WsJobsError:
    """The product error ``exc`` stands for; an unknown one is an internal error."""
    for cause in _chain(exc):
        if isinstance(cause, WsJobsError):
            return cause
        mapped = _known(cause)
        if mapped is not None:
            return mapped
    name = type(exc).__name__
    detail = str(exc).strip()
    shown = f"{name}: {detail}" if detail else name
    return WsJobsError(
        f"internal error ({shown}); this is a bug: re-run with --debug (or WSJOBS_DEBUG=1)"
        " for the traceback and report it"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        todo.extend(getattr(current, "exceptions", ()))  # ExceptionGroup


def _known(exc: BaseException) -> WsJobsError | None:
    """Third-party exceptions with a known meaning, as product errors."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if status in (401, 403):
            return Forbidden(
                f"the Prefect API at {_api_url(exc)} refused the request (HTTP {status}):"
                " check PREFECT_API_AUTH_STRING / PREFECT_API_KEY"
            )
        if status >= 500:
            return ServerUnreachable(
                f"the Prefect API at {_api_url(exc)} failed (HTTP {status}): see the server's"
                " log, then try again"
            )
        return None
    if isinstance(exc, httpx.TransportError):
        return unreachable(_api_url(exc), exc)
    if _is_duckdb(exc):
        from workspaces_jobs.reporting.store import history_path, known_error, lock_holder

        known = known_error(history_path(), exc)
        if known is not None:
            return known
        holder = lock_holder(exc)
        if holder is not None:
            return HistoryLocked(f"the history file is locked by {holder}: try again later")
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        return from_os_error(exc, exc.filename or "a file")
    if type(exc).__name__ == "ValidationError" and type(exc).__module__.startswith("pydantic"):
        return BadInput(_validation_line(exc))
    return None


def _validation_line(exc: Any) -> str:
    """A pydantic error as one line; a ``Settings`` field is named as its variable."""
    try:
        first = exc.errors()[0]
    except Exception:  # not the pydantic we know: its first line still says something
        return f"bad value: {_first_line(exc)}"
    loc = ".".join(str(part) for part in first.get("loc", ()))
    name = f"WSJOBS_{loc.upper()}" if getattr(exc, "title", "") == "Settings" else loc
    return f"bad setting {name}={first.get('input')!r}: {first.get('msg', 'invalid')}"


def unreachable(url: str, exc: BaseException) -> ServerUnreachable:
    """The one line for an API that does not answer."""
    return ServerUnreachable(
        f"the Prefect API at {url} does not answer ({_first_line(exc)}):"
        " start it (`wsjobs server start`) or fix PREFECT_API_URL, then try again"
    )


def _api_url(exc: BaseException) -> str:
    request = getattr(exc, "_request", None)
    if request is not None:
        return f"{request.url.scheme}://{request.url.netloc.decode()}"
    return os.environ.get("PREFECT_API_URL", "PREFECT_API_URL")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_duckdb(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb")


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
