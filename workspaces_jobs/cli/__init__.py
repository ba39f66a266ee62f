"""``wsjobs``: the command line. One module per command group; see the README for a tour.

Commands import Prefect lazily, inside the command, so ``wsjobs --help`` is instant and
the managed server's URL is in the environment before Prefect reads its settings.
Every user mistake ends as one red line on stderr and a non-zero exit code
(:data:`EXIT_BAD_INPUT`), never a traceback.
"""

from __future__ import annotations

import sys

import typer

from workspaces_jobs.cli import (
    catalog,
    history,
    jobs,
    lifecycle,
    listing,
    logs,
    notify,
    retention,
    server,
    ui,
)
from workspaces_jobs.cli.output import EXIT_BAD_INPUT, fail

app = typer.Typer(
    name="wsjobs",
    help="Jobs for device actions on Prefect: run, watch, cancel, notify, report.",
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


def main() -> None:
    from workspaces_jobs.catalog import CatalogError
    from workspaces_jobs.errors import user_message
    from workspaces_jobs.server import ServerError

    try:
        app()
    except (CatalogError, ServerError, LookupError, ValueError) as exc:
        fail(user_message(exc), code=EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        sys.exit(130)
