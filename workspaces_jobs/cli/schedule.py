"""``wsjobs schedule``, ``wsjobs schedules [pause|resume|delete]`` and ``wsjobs worker``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer
from rich.table import Table

from workspaces_jobs.cli.output import console, err_console, print_json

schedules_app = typer.Typer(
    help="List schedules (prefect.yaml's and wsjobs schedule's); pause, resume or delete one.",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.command()(schedule)
    app.add_typer(schedules_app, name="schedules")
    app.command()(worker)


def warn(message: str | None) -> None:
    if message:
        err_console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True, markup=True)


def _when(value: datetime, tz: str) -> str:
    from workspaces_jobs.reporting.windows import resolve_zone

    return value.astimezone(resolve_zone(tz)).strftime("%Y-%m-%d %H:%M %Z")


def schedule(
    action: str = typer.Argument(..., help="Action to schedule (see `wsjobs actions`)."),
    devices: str | None = typer.Option(
        None, "--devices", "-d", help="Comma-separated device names."
    ),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Every device with this tag."),
    all_devices: bool = typer.Option(False, "--all", help="Every device in the inventory."),
    param: list[str] = typer.Option([], "--param", "-p", help="Action parameter KEY=VALUE."),
    info: str = typer.Option("", "--info", "-i", help="The change to be made (job names)."),
    owner: str | None = typer.Option(None, "--owner", help="Who schedules (default: OS user)."),
    at: str | None = typer.Option(None, "--at", help="Once, at HH:MM (next) or a date-time."),
    in_: str | None = typer.Option(None, "--in", help="Once, after a delay such as 2h or 15m."),
    cron: str | None = typer.Option(None, "--cron", help='Cron expression, e.g. "0 2 * * *".'),
    tz: str | None = typer.Option(
        None, "--tz", help="IANA time zone of --cron/--at (default: the system zone)."
    ),
    every: str | None = typer.Option(None, "--every", help="Every interval, e.g. 15m or 1h."),
    name: str | None = typer.Option(None, "--name", help="Schedule name (default: ACTION-xxxxxx)."),
    json_out: bool = typer.Option(False, "--json", help="Print the schedule as JSON."),
) -> None:
    """Schedule an action: its jobs are created Pending ahead of time and run by the worker.

    Validated like `wsjobs run`; on bad input nothing is created (exit 4)."""
    from workspaces_jobs.activity import local_user
    from workspaces_jobs.cli.connection import connect
    from workspaces_jobs.cli.jobs import parse_params, target_of
    from workspaces_jobs.schedules import create_schedule, job_spec, parse_cadence

    target = target_of(devices, tag, all_devices)
    params = parse_params(param)
    cadence = parse_cadence(at=at, in_=in_, cron=cron, every=every, tz=tz)
    job_spec(action, target=target, params=params, info=info, owner=owner)  # before connecting
    from workspaces_jobs.cli.login import remote

    current = remote()
    if current:
        data = current.call(
            "POST", "/schedules",
            {"action": action, "target": target, "params": params, "info": info, "at": at,
             "in": in_, "cron": cron, "every": every, "tz": tz, "name": name},
        )  # fmt: skip
        if json_out:
            print_json(data)
        else:
            console.print(f"Schedule {data['name']}: {data['action']} as {data['created_by']}",
                          markup=False)  # fmt: skip
        return
    connect()
    made = create_schedule(
        action,
        target=target,
        cadence=cadence,
        params=params,
        info=info,
        owner=owner,
        name=name,
        who=local_user(),
        source="cli",
    )
    warn(made.warning)
    if json_out:
        print_json(made.to_dict())
        return
    console.print(f"Schedule [bold]{made.name}[/bold]: {made.action} on {', '.join(made.target)}")
    console.print(f"  {made.cadence} ({made.timezone})", markup=False)
    for when in made.next_runs:
        console.print(f"  next: {_when(when, made.timezone)}", markup=False)


def _table(items: list[Any]) -> Table:
    table = Table("name", "action", "target", "parameters", "cadence", "zone", "next runs", "state")
    table.add_column("created by")
    for s in items:
        params = ", ".join(f"{k}={v}" for k, v in s.params.items()) or "-"
        upcoming = "\n".join(_when(t, s.timezone) for t in s.next_runs) or "-"
        table.add_row(
            s.name,
            s.action,
            ", ".join(s.target) or "-",
            params,
            s.cadence,
            s.timezone,
            upcoming,
            "[yellow]paused[/yellow]" if s.paused else "active",
            s.created_by,
        )
    return table


@schedules_app.callback()
def schedules(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print the schedules as JSON."),
) -> None:
    """Every schedule: action, target, parameters, cadence, zone, next runs, state, creator."""
    if ctx.invoked_subcommand is not None:
        return
    from workspaces_jobs.cli.connection import connect
    from workspaces_jobs.schedules import list_schedules

    connect()
    items = list_schedules()
    if json_out:
        print_json([s.to_dict() for s in items])
        return
    if not items:
        console.print("No schedules: create one with `wsjobs schedule ACTION ... --cron ...`.")
        return
    console.print(_table(items))


def _remote_change(name: str, op: str, verb: str, json_out: bool) -> bool:
    """Through the logged-in server, if any; True when done there."""
    from workspaces_jobs.cli.login import remote

    current = remote()
    if current is None:
        return False
    current.call("POST", f"/schedules/{name}/{op}")
    _done(verb, name, json_out, "")
    return True


def _done(verb: str, name: str, json_out: bool, deployment_id: str) -> None:
    if json_out:
        print_json({"name": name, "id": deployment_id, "done": verb})
    else:
        console.print(f"Schedule {name}: {verb}", markup=False)


@schedules_app.command("pause")
def pause(
    name: str = typer.Argument(..., help="Schedule name (see `wsjobs schedules`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Stop creating runs; the Pending runs it created are removed."""
    from workspaces_jobs.cli.connection import connect
    from workspaces_jobs.schedules import pause_schedule

    if _remote_change(name, "pause", "paused", json_out):
        return
    connect()
    _done("paused", name, json_out, pause_schedule(name))


@schedules_app.command("resume")
def resume(
    name: str = typer.Argument(..., help="Schedule name (see `wsjobs schedules`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create runs again from the next due time."""
    from workspaces_jobs.cli.connection import connect
    from workspaces_jobs.schedules import resume_schedule

    if _remote_change(name, "resume", "resumed", json_out):
        return
    connect()
    _done("resumed", name, json_out, resume_schedule(name))


@schedules_app.command("delete")
def delete(
    name: str = typer.Argument(..., help="Schedule name (see `wsjobs schedules`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Delete the schedule and its future runs; jobs that ran stay in the history."""
    from workspaces_jobs.cli.connection import connect
    from workspaces_jobs.schedules import delete_schedule

    if _remote_change(name, "delete", "deleted", json_out):
        return
    connect()
    _done("deleted", name, json_out, delete_schedule(name))


def worker(
    name: str | None = typer.Option(None, "--name", help="Worker name shown in the Prefect UI."),
) -> None:
    """Run schedules and later jobs: Prefect's process worker for the job pool, in the
    foreground (the managed local server starts one by itself)."""
    from workspaces_jobs.worker import run

    err_console.print("worker: polling for due jobs (Ctrl-C to stop)")
    run(name=name)
