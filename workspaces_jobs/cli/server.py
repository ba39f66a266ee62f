"""``wsjobs server start|status|stop``: the managed local Prefect server."""

from __future__ import annotations

import os

import typer

from workspaces_jobs import server
from workspaces_jobs.cli.output import console, print_json

app = typer.Typer(
    help="Manage the local Prefect server wsjobs starts when PREFECT_API_URL is unset."
)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="server")


@app.command()
def start() -> None:
    """Start the local server (or find the running one) and print its URLs."""
    with console.status("Starting the local Prefect server…") as spinner:
        info = server.start(wait=lambda msg: spinner.update(msg))
    console.print(f"Prefect API: {info.api_url}\nPrefect UI:  {info.ui_url}", markup=False)
    console.print(
        f"UI login: paste the line in {server.auth_file()} (asked once per browser)",
        markup=False,
        soft_wrap=True,
    )


@app.command()
def status(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Say whether the local server runs, with its API and UI URLs and its companions."""
    external = os.environ.get("PREFECT_API_URL")
    info = server.status()
    running = info is not None and server.healthy(info.api_url, timeout=10.0)
    companions = [
        {"name": c.name, "pid": info.companions.get(c.name) if info else None}
        for c in server.enabled_companions()
    ]
    for comp in companions:
        comp["running"] = comp["pid"] is not None
    data = {
        "managed": info is not None,
        "running": running,
        "pid": info.pid if info else None,
        "api_url": external or (info.api_url if info else None),
        "ui_url": server.ui_url() if external else (info.ui_url if info else None),
        "external": bool(external),
        "companions": [] if external else companions,
        "auth_file": None if external else str(server.auth_file()),
    }
    if json_out:
        print_json(data)
        return
    if external:
        console.print(f"Using the Prefect API at {external} (PREFECT_API_URL); nothing is managed.")
    elif info:
        head = (
            f"running (pid {info.pid})"
            if running
            else f"process {info.pid} runs but its API does not answer (starting, or see "
            f"{server.server_home() / 'server.log'})"
        )
        console.print(
            f"{head}\nPrefect API: {info.api_url}\nPrefect UI:  {info.ui_url}", markup=False
        )
        for comp in companions:
            state = f"running (pid {comp['pid']})" if comp["running"] else "not running"
            console.print(f"{comp['name']}: {state}")
        console.print(
            f"UI login: paste the line in {server.auth_file()} (asked once per browser)",
            markup=False,
            soft_wrap=True,
        )
        if not running:
            raise typer.Exit(1)
    else:
        console.print("not running; any wsjobs command that needs it starts it")
        raise typer.Exit(1)


@app.command()
def stop() -> None:
    """Stop the local server and its companions."""
    info = server.stop()
    console.print(f"stopped (pid {info.pid})" if info else "not running")
