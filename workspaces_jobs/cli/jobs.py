"""``wsjobs run``, ``wsjobs show`` and ``wsjobs demo``."""

from __future__ import annotations

from typing import Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from workspaces_jobs import activity
from workspaces_jobs.cli.connection import connect
from workspaces_jobs.cli.output import (
    EXIT_BAD_INPUT,
    console,
    err_console,
    fail,
    fmt_time,
    print_json,
    print_warning,
    safe_text,
    styled,
    styled_status,
)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(show)
    app.command()(demo)


def parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--param {pair!r} is not KEY=VALUE: write e.g. --param package=openssl")
        params[key] = value
    return params


def target_of(devices: str | None, tag: list[str], all_devices: bool) -> list[str]:
    target = [d for d in (devices or "").split(",") if d.strip()]
    target += [f"tag:{t}" for t in tag]
    if all_devices:
        target.append("all")
    if not target:
        fail("no device selected: pass --devices NAMES, --tag TAG or --all")
    return target


def watch_remote(current: Any, job_id: str, *, every: float = 1.0, limit: float = 86400) -> str:
    """Follow a job through the logged-in server until it ends; return its final status."""
    import time

    from workspaces_jobs.status import JobStatus

    deadline = time.monotonic() + limit
    while True:
        status = str(current.call("GET", f"/jobs/{job_id}")["status"])
        if JobStatus(status).is_final or time.monotonic() > deadline:
            return status
        time.sleep(every)


def watch(job_id: str, *, quiet: bool = False) -> str:
    """Show a live progress bar until the job ends; return its final status."""
    from workspaces_jobs.jobs import wait_job

    if quiet:
        return wait_job(job_id).value
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as bar:
        task = bar.add_task("Pending", total=100)
        eta = _EtaTicker(job_id)

        def update(status: Any, progress: float | None) -> None:
            left = eta.text(status)
            label = f"{status.value} · {left}" if left else status.value
            bar.update(task, description=label, completed=progress or 0)

        status = wait_job(job_id, on_update=update)
        if status.value == "Completed":
            bar.update(task, completed=100)
    return status.value


class _EtaTicker:
    """The progress bar's "about N left", recomputed every :data:`ETA_EVERY` seconds
    (it reads the job's steps; the medians are read from the history once)."""

    ETA_EVERY = 5.0

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.stats: Any = None
        self.loaded = False
        self.at = 0.0
        self.last: str | None = None

    def text(self, status: Any) -> str | None:
        import time

        from workspaces_jobs.eta import durations_from_history, estimate_job, fmt_seconds
        from workspaces_jobs.jobs import read_job
        from workspaces_jobs.status import JobStatus

        if status != JobStatus.IN_PROGRESS:
            return None
        if time.monotonic() - self.at < self.ETA_EVERY:
            return self.last
        self.at = time.monotonic()
        try:
            job = read_job(self.job_id, with_logs=False)
            if not self.loaded:
                self.stats = durations_from_history(job.action, exclude=job.id)
                self.loaded = True
            found = estimate_job(job, self.stats) if self.stats else None
        except Exception:  # an estimate never breaks the progress bar
            found = None
        self.last = f"about {fmt_seconds(found.seconds)} left" if found else None
        return self.last


def run(
    action: str = typer.Argument(..., help="Action to run (see `wsjobs actions`)."),
    devices: str | None = typer.Option(
        None, "--devices", "-d", help="Comma-separated device names."
    ),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Run on every device with this tag."),
    all_devices: bool = typer.Option(False, "--all", help="Run on every device in the inventory."),
    param: list[str] = typer.Option([], "--param", "-p", help="Action parameter KEY=VALUE."),
    info: str = typer.Option(
        "", "--info", "-i", help="The change to be made (shown in the job list)."
    ),
    owner: str | None = typer.Option(None, "--owner", help="Who launches it (default: OS user)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job until it ends."),
    notify: list[str] = typer.Option(
        [], "--notify", help="Email this address when the job ends; repeatable."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    at: str | None = typer.Option(
        None, "--at", help="Start later, at HH:MM (next) or a date-time; the job is Pending."
    ),
    in_: str | None = typer.Option(None, "--in", help="Start later, after e.g. 10m or 2h."),
    tz: str | None = typer.Option(None, "--tz", help="Time zone of --at (default: system)."),
) -> None:
    """Run an action as a job. Exit code: 0 Completed, 1 Error, 2 Completed with errors,
    3 Canceled by the user, 4 bad input. With --at/--in the job is created Pending and
    started by the worker at that time (exit 0 once created)."""
    from workspaces_jobs.jobs import EXIT_CODES, job_link, submit_job
    from workspaces_jobs.status import JobStatus

    target = target_of(devices, tag, all_devices)
    params = parse_params(param)
    from workspaces_jobs.cli.login import remote

    current = remote()
    if current and (at or in_ or tz):
        _run_later_remote(current, action, target, params, info, at=at, in_=in_, tz=tz,
                          json_out=json_out)  # fmt: skip
        return
    if current:
        data = current.call(
            "POST", "/jobs",
            {"action": action, "target": target, "params": params, "info": info,
             "notify": list(notify or [])},
        )  # fmt: skip
        job_id = data["id"]
        if not json_out:
            console.print(
                Text.assemble("Job ", styled(job_id, "bold"), f" ({action}) as {data['owner']}")
            )
        status = watch_remote(current, job_id) if wait else JobStatus.PENDING.value
        if json_out:
            print_json({"id": job_id, "status": status, "owner": data["owner"]})
        elif wait:
            console.print(Text.assemble("Final status: ", styled_status(status)))
        if wait:
            raise typer.Exit(EXIT_CODES[JobStatus(status)])
        return
    if at or in_ or tz:
        _run_later(action, target, params, info, owner, at=at, in_=in_, tz=tz, json_out=json_out)
        return
    connect()
    job_id = submit_job(action, target=target, params=params, info=info, owner=owner, notify=notify)
    activity.record_run(job_id, action, who=activity.local_user(), source="cli", owner=owner)
    if not json_out:
        console.print(Text.assemble("Job ", styled(job_id, "bold"), f" ({action})"))
        console.print(job_link(job_id))
    if not wait:
        if json_out:
            print_json({"id": job_id, "status": JobStatus.PENDING.value, "url": job_link(job_id)})
        return
    status = watch(job_id, quiet=json_out)
    if json_out:
        print_json({"id": job_id, "status": status, "url": job_link(job_id)})
    else:
        console.print(Text.assemble("Final status: ", styled_status(status)))
    raise typer.Exit(EXIT_CODES[JobStatus(status)])


def _run_later_remote(
    current: Any,
    action: str,
    target: list[str],
    params: dict[str, str],
    info: str,
    *,
    at: str | None,
    in_: str | None,
    tz: str | None,
    json_out: bool,
) -> None:
    """``run --at/--in`` through the login: the server creates the Pending job as the
    token's user. ``--at`` without ``--tz`` means this machine's zone, so it is sent."""
    from workspaces_jobs.reporting.windows import system_zone_name

    if at and not tz:
        tz = system_zone_name()
    data = current.call(
        "POST", "/jobs",
        {"action": action, "target": target, "params": params, "info": info,
         "at": at, "in": in_, "tz": tz},
    )  # fmt: skip
    if data.get("warning"):
        err_console.print(f"[yellow]warning:[/yellow] {data['warning']}", soft_wrap=True)
    if json_out:
        print_json({k: data[k] for k in ("id", "status", "owner", "expected_start")})
        return
    console.print(
        f"Job [bold]{data['id']}[/bold] ({action}) Pending as {data['owner']},"
        f" starts {data['expected_start']}"
    )


def _run_later(
    action: str,
    target: list[str],
    params: dict[str, str],
    info: str,
    owner: str | None,
    *,
    at: str | None,
    in_: str | None,
    tz: str | None,
    json_out: bool,
) -> None:
    """``run --at/--in``: a Pending job at once, which the worker starts when due."""
    from workspaces_jobs.errors import BadInput
    from workspaces_jobs.jobs import job_link
    from workspaces_jobs.schedules import job_spec, parse_cadence, submit_later

    if not (at or in_):
        raise BadInput("--tz needs --at: write e.g. --at 02:00 --tz Europe/Berlin")
    cadence = parse_cadence(at=at, in_=in_, tz=tz)
    assert cadence.first is not None
    spec = job_spec(action, target=target, params=params, info=info, owner=owner)
    connect()
    job_id, warning = submit_later(spec, cadence.first)
    activity.record_run(
        job_id, action, who=activity.local_user(), source="cli", owner=owner,
        detail=f"at {cadence.first.isoformat()}",
    )  # fmt: skip
    if warning:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    if json_out:
        print_json(
            {
                "id": job_id,
                "status": "Pending",
                "expected_start": cadence.first.isoformat(),
                "url": job_link(job_id),
            }
        )
        return
    console.print(
        f"Job [bold]{job_id}[/bold] ({action}) Pending, starts {cadence.text.removeprefix('once ')}"
        f" ({cadence.timezone})\n{job_link(job_id)}"
    )


def show(
    job_id: str = typer.Argument(..., help="Job id (the flow run id)."),
    json_out: bool = typer.Option(False, "--json", help="Print the job as a JSON object."),
    logs: bool = typer.Option(True, "--logs/--no-logs", help="Include each step's log lines."),
    lines: int | None = typer.Option(
        None,
        "--lines",
        "-n",
        min=0,
        help="Log lines per step, the last ones (default WSJOBS_SHOW_LINES, 10; 0 = all).",
    ),
) -> None:
    """Show a job: status, times, progress, its devices (Workspaces) and its logs.

    When the Prefect API does not answer, the job's copy in the history file is shown,
    after a warning (without subscribers: they live in Prefect)."""
    # httpx only, no Prefect import on this path (0.65-0.8 s of a ~1 s command; #19)
    from workspaces_jobs.apiread import job_link, read_job
    from workspaces_jobs.errors import ServerUnreachable
    from workspaces_jobs.notify.subscriptions import read_subscribers_light as read_subscribers
    from workspaces_jobs.settings import get_settings

    try:
        connect()
        job = read_job(job_id, with_logs=logs)
        subscribers = read_subscribers(job.id)
    except ServerUnreachable as exc:
        job = _job_from_history(job_id, exc)
        subscribers = []
    if json_out:
        data = job.to_dict()
        keys = [
            "id",
            "action",
            "info",
            "owner",
            "status",
            "reason",
            "created",
            "started",
            "ended",
            "progress",
            "devices",
            "steps",
            "logs",
        ]
        extra = [
            "name",
            "prefect_state_name",
            "state_message",
            "parameters",
            "canceled_by",
            "rerun_of",
            "tags",
            "recovered",
        ]
        print_json(
            {k: data[k] for k in keys + extra}
            | {"url": job_link(job.id), "notifications": subscribers}
        )
        return
    head = Table.grid(padding=(0, 2))
    head.add_row("Job", job.id)
    head.add_row("Action", job.action)
    head.add_row("Info", job.info or "-")
    head.add_row("Status", styled_status(job.status, job.reason))
    if job.state_message:
        head.add_row("Message", job.state_message)
    head.add_row("Owner", job.owner or "-")
    head.add_row("Created", fmt_time(job.created))
    head.add_row("Started", fmt_time(job.started))
    head.add_row("Ended", fmt_time(job.ended))
    head.add_row("Progress", f"{job.progress:.0f} %" if job.progress is not None else "-")
    from workspaces_jobs.eta import job_eta_text

    eta = job_eta_text(job)
    if eta:
        head.add_row("Time left", eta)
    if job.rerun_of:
        head.add_row("Rerun of", job.rerun_of)
    if job.canceled_by:
        head.add_row("Canceled by", job.canceled_by)
    if job.recovered:
        head.add_row("Recovered", "after inactivity: it was Error (inactivity), then finished")
    head.add_row("Prefect UI", job_link(job.id))
    console.print(head)
    ws = Table(
        "device", "status", "steps ok", "steps failed", "started", "ended", title="Workspaces"
    )
    for d in job.devices:
        ws.add_row(
            d.device,
            styled_status(d.status),
            str(d.steps_ok),
            str(d.steps_failed),
            fmt_time(d.started),
            fmt_time(d.ended),
        )
    console.print(ws)
    if subscribers:
        from workspaces_jobs.cli.notify import subscribers_table
        from workspaces_jobs.notify import Record

        console.print(subscribers_table(Record.from_value(job.id, {"subscribers": subscribers})))
    if logs:
        _print_logs(job, per_step=get_settings().show_lines if lines is None else lines)


#: Characters of one line ``show`` prints; longer lines end with how to get the rest.
SHOW_LINE_CHARS = 1000


def _print_logs(job: Any, *, per_step: int) -> None:
    """The last ``per_step`` lines of each step (0: all), each cut to SHOW_LINE_CHARS, and
    how to get the rest with ``wsjobs logs``. Written in one go: rich's per-line
    rendering is what made ``show`` slow on big logs."""
    from workspaces_jobs.cli.logs import format_line
    from workspaces_jobs.logview import group_logs, terminal_safe

    cap = per_step or None
    out: list[str] = []
    short = job.id
    if cap:
        out.append(f"Logs: the last {cap} lines of each step (all: wsjobs logs {short})")
    else:
        out.append("Logs")
    for group in group_logs(job, cap=cap):
        for steps in group.steps:
            total = len(steps.lines) + steps.hidden
            where = terminal_safe(f"{group.device} · {steps.step}" if group.device else "job")
            head = f"── {where}: {total} line{'s' if total != 1 else ''}"
            if steps.hidden:
                more = f" --device {group.device} --step {steps.step}" if group.device else ""
                head += f", {steps.hidden} earlier not shown (wsjobs logs {short}{more})"
            out.append(terminal_safe(head))
            for line in steps.lines:
                text = format_line(line)
                if len(text) > SHOW_LINE_CHARS:
                    cut = len(text) - SHOW_LINE_CHARS
                    text = f"{text[:SHOW_LINE_CHARS]} …[{cut} more characters: wsjobs logs]"
                out.append(text)
    console.file.write("\n".join(out) + "\n")
    console.file.flush()


def _job_from_history(job_id: str, cause: Exception) -> Any:
    """``show``'s fallback: the history's copy of the job, after a ``warning:`` line."""
    from workspaces_jobs.gateway import full_job_id
    from workspaces_jobs.reporting import reader
    from workspaces_jobs.reporting.store import history_path, open_store

    canonical = full_job_id(job_id)
    if not history_path().exists():
        raise cause
    with open_store(read_only=True) as con:
        job = reader.job(con, canonical)
    if job is None:
        raise cause  # the API is what is wrong; the history simply has not seen this job
    print_warning(f"{cause}; showing the history file's copy of the job (as of its last sync)")
    return job


def demo() -> None:
    """Run the demo: one job that ends Completed with errors, one that ends Completed."""
    from workspaces_jobs.jobs import job_link, read_job, submit_job

    connect()
    runs = [
        ("demo-patch", "Update openssl on the lab and branch-office devices"),
        ("demo-inventory", "Collect OS facts from every device"),
    ]
    results = []
    for action, info in runs:
        job_id = submit_job(action, target=["all"], info=info)
        activity.record_run(job_id, action, who=activity.local_user(), source="cli")
        console.print(Text.assemble("\n", styled(action, "bold"), f": job {job_id}"))
        console.print(job_link(job_id))
        status = watch(job_id)
        job = read_job(job_id, with_logs=False)
        console.print(
            Text.assemble(
                "Final status: ", styled_status(status), "  ", safe_text(job.state_message or "")
            )
        )
        for d in job.devices:
            console.print(Text.assemble(safe_text(f"  {d.device:<8} "), styled_status(d.status)))
        results.append(status)
    console.print(
        Text.assemble("\nSee a job's steps and logs with ", styled("wsjobs show JOB_ID", "bold"))
    )
    if results != ["Completed with errors", "Completed"]:
        raise typer.Exit(EXIT_BAD_INPUT if not results else 1)
