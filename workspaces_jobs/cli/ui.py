"""``wsjobs ui``: the web jobs view (list and detail screens) on http://127.0.0.1:8787."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from workspaces_jobs.cli import bounds
from workspaces_jobs.cli.output import console, fail, print_warning


def register(app: typer.Typer) -> None:
    app.command()(ui)


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (local only)."),
    port: int = typer.Option(8787, "--port", help="Port to listen on."),
    history: Path | None = typer.Option(
        None, "--history", help="DuckDB history file (default: WSJOBS_HISTORY)."
    ),
    sync_every: float = typer.Option(
        5.0, "--sync-every", help="Seconds between background syncs (0: only on Refresh)."
    ),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", help="Extra Host name to answer to (with --host 0.0.0.0)."
    ),
) -> None:
    """Serve the Jobs list and detail screens in the browser, behind a sign-in. The first
    start creates the account ``admin`` and prints its password once (or takes
    WSJOBS_ADMIN_PASSWORD). The server reads the history beside every other reader and
    syncs it every few seconds, unless the managed server's history-sync companion keeps
    the same history (then that is the one writer)."""
    from workspaces_jobs.cli.connection import connect
    from workspaces_jobs.web.security import is_loopback

    bounds.seconds(sync_every, "--sync-every")
    if not 0 < port < 65536:
        fail(f"bad port {port}: use 1-65535")
    if not _port_free(host, port):
        fail(
            f"cannot listen on {host}:{port}: the port is in use or the address is not local; "
            "pick another with --port"
        )
    if not is_loopback(host):
        print_warning(
            f"listening on {host} over plain HTTP: passwords and sessions cross the network "
            "unencrypted; serve it behind a TLS reverse proxy"
        )
    connect()
    from workspaces_jobs.identity.accounts import first_start_notice

    notice = first_start_notice()  # the first admin, its password shown this once
    if notice:
        console.print(notice, soft_wrap=True, markup=False)

    import uvicorn

    from workspaces_jobs.web.app import create_app
    from workspaces_jobs.web.state import WebState

    state = WebState(history, sync_every=sync_every)  # a StoreError ends at the CLI boundary
    app = create_app(state, host=host, extra_hosts=allow_host)
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"Jobs view on http://{shown}:{port}/ — history {state.path} (Ctrl+C to stop)",
        soft_wrap=True,
        markup=False,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
