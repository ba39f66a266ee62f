"""``wsjobs``: the command line. One module per command group; see the README for a tour.

Commands import Prefect lazily, inside the command, so ``wsjobs --help`` is instant and
the managed server's URL is in the environment before Prefect reads its settings.

:func:`main` is the one error boundary: every failure ends as one ``error:`` line on stderr
and an exit code from :mod:`workspaces_jobs.errors` (4 and up; 0-3 are job outcomes), never
a traceback. ``--debug`` (anywhere on the line) or ``WSJOBS_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from workspaces_jobs.cli import (
    catalog,
    history,
    jobs,
    lake,
    lifecycle,
    listing,
    login,
    logs,
    notify,
    retention,
    schedule,
    server,
    ui,
    users,
)
from workspaces_jobs.cli.boundary import run_guarded

app = typer.Typer(
    name="wsjobs",
    help="Jobs for device actions on Prefect: run, watch, cancel, notify, report. "
    "Add --debug (or set WSJOBS_DEBUG=1) to see a failure's traceback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Each command module adds its commands; one line per module.
jobs.register(app)
catalog.register(app)
server.register(app)
history.register(app)
notify.register(app)
lifecycle.register(app)
ui.register(app)
listing.register(app)
logs.register(app)
retention.register(app)
schedule.register(app)
lake.register(app)
login.register(app)
users.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run ``wsjobs`` with ``argv`` (default: the process's) and exit with its code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("WSJOBS_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    head, sep, tail = _split_at_separator(args)
    if "--debug" in head:
        debug = True
        args = [a for a in head if a != "--debug"] + sep + tail
    sys.exit(run_guarded(app, args, debug=debug))


def _split_at_separator(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """``args`` before ``--``, the ``--`` itself (or nothing), and what follows it."""
    if "--" not in args:
        return args, [], []
    i = args.index("--")
    return args[:i], ["--"], args[i + 1 :]
