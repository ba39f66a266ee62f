"""``wsjobs cancel``, ``wsjobs kill``, ``wsjobs rerun`` and ``wsjobs watchdog``."""

from __future__ import annotations

import typer
from rich.text import Text

from workspaces_jobs.activity import local_user
from workspaces_jobs.cli.output import (
    EXIT_BAD_INPUT,
    console,
    err_console,
    print_error,
    print_json,
    safe_text,
    styled,
    styled_status,
)
from workspaces_jobs.errors import BadInput, user_message

#: Exit code when at least one job could not be canceled / killed (bad input stays 4).
EXIT_REFUSED = 1


def register(app: typer.Typer) -> None:
    app.command()(cancel)
    app.command()(kill)
    app.command()(rerun)
    app.command()(watchdog)


def _connect() -> None:
    from workspaces_jobs.cli.connection import connect

    connect()


def cancel(
    job_ids: list[str] = typer.Argument(..., metavar="JOB_ID", help="Pending job id(s)."),
    by: str | None = typer.Option(None, "--by", help="Who cancels (default: OS user)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Cancel Pending jobs, one result line each.

    A job that started cannot be canceled (use kill): exit code 1 if any job was
    refused, 4 if an id is not a job."""
    from workspaces_jobs.cli.login import Refused, remote
    from workspaces_jobs.gateway import JobNotFound
    from workspaces_jobs.lifecycle import LifecycleError, LifecycleResult, cancel_job

    current = remote()
    if current is None:
        _connect()
    results: list[dict[str, str]] = []
    code = 0
    for job_id in job_ids:
        try:
            if current:
                d = current.call("POST", f"/jobs/{job_id}/cancel")
                res = LifecycleResult(d["id"], d["status"], d["message"])
            else:
                res = cancel_job(job_id, by=by, who=local_user())
        except (LifecycleError, Refused, JobNotFound, BadInput) as exc:
            bad_id = not isinstance(exc, LifecycleError | Refused)
            code = max(code, EXIT_BAD_INPUT if bad_id else EXIT_REFUSED)
            results.append({"id": job_id, "status": "", "error": user_message(exc)})
            if not json_out:
                print_error(results[-1]["error"])
            continue
        results.append(res.to_dict())
        if not json_out:
            console.print(_result_line(res.job_id, res.status, res.message))
    if json_out:
        print_json(results)
    if code:
        raise typer.Exit(code)


def kill(
    job_id: str = typer.Argument(..., help="In progress job id."),
    by: str | None = typer.Option(None, "--by", help="Who kills it (default: OS user)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Stop an In progress job; it ends Canceled by the user.

    Its step processes are terminated on every device and the killer is recorded."""
    from workspaces_jobs.cli.login import Refused, remote
    from workspaces_jobs.lifecycle import LifecycleError, LifecycleResult, kill_job

    current = remote()
    try:
        if current:
            d = current.call("POST", f"/jobs/{job_id}/kill")
            res = LifecycleResult(d["id"], d["status"], d["message"])
        else:
            _connect()
            res = kill_job(job_id, by=by, who=local_user())
    except (LifecycleError, Refused) as exc:
        from workspaces_jobs.cli.output import fail

        fail(str(exc), code=EXIT_REFUSED)
    if json_out:
        print_json(res.to_dict())
    else:
        console.print(_result_line(res.job_id, res.status, res.message))


def _result_line(job_id: str, status: str, message: str) -> Text:
    return Text.assemble(
        safe_text(f"{job_id}: "), styled_status(status), safe_text(f" ({message})")
    )


def rerun(
    job_id: str = typer.Argument(..., help="The job to run again."),
    failed_only: bool = typer.Option(
        False, "--failed-only", help="Only the devices that did not succeed."
    ),
    owner: str | None = typer.Option(None, "--owner", help="Who launches it (default: OS user)."),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Follow the new job until it ends."),
    json_out: bool = typer.Option(False, "--json", help="Print the new job as JSON."),
) -> None:
    """Run a finished job again as a new job (same action, parameters and info).

    The new job records which job it reruns; --failed-only targets the devices that
    did not succeed."""
    from workspaces_jobs.cli.login import remote
    from workspaces_jobs.jobs import EXIT_CODES, job_link
    from workspaces_jobs.lifecycle import RerunResult, rerun_job
    from workspaces_jobs.status import JobStatus

    current = remote()
    if current:
        d = current.call("POST", f"/jobs/{job_id}/rerun", {"failed_only": failed_only})
        res = RerunResult(d["id"], d["rerun_of"], d["action"], list(d["target"]))
    else:
        _connect()
        res = rerun_job(job_id, failed_only=failed_only, owner=owner, who=local_user())
    status = JobStatus.PENDING.value
    if wait:
        from workspaces_jobs.cli.jobs import watch, watch_remote

        status = watch_remote(current, res.job_id) if current else watch(res.job_id, quiet=json_out)
    if json_out:
        print_json(res.to_dict() | {"status": status, "url": job_link(res.job_id)})
    else:
        console.print(
            Text.assemble(
                "Job ",
                styled(res.job_id, "bold"),
                safe_text(f" ({res.action}) reruns {job_id} on {', '.join(res.target)}"),
            )
        )
        console.print(job_link(res.job_id))
        if wait:
            console.print(Text.assemble("Final status: ", styled_status(status)))
    if wait:
        raise typer.Exit(EXIT_CODES[JobStatus(status)])


def watchdog(
    once: bool = typer.Option(False, "--once", help="One sweep, then exit."),
    interval: float = typer.Option(30.0, "--interval", min=0.1, help="Seconds between sweeps."),
    grace: float = typer.Option(
        30.0, "--grace", min=0.0, help="Seconds added to a job's inactivity timeout."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
) -> None:
    """Mark jobs whose process died or froze as Error (inactivity).

    A job In progress that recorded nothing for its inactivity timeout plus --grace
    seconds is forced to Error through the API, with a log line saying why."""
    from workspaces_jobs.cli import bounds

    bounds.seconds(interval, "--interval", low=0.1)
    bounds.seconds(grace, "--grace", high=7 * bounds.MAX_INTERVAL)
    from workspaces_jobs.flows.watchdog import (
        WatchdogAction,
        run_forever,
        send_owed_emails,
        sweep,
    )

    _connect()

    def report(done: list[WatchdogAction]) -> None:
        if json_out:
            print_json([d.to_dict() for d in done])
            return
        for d in done:
            console.print(f"{d.job_id} ({d.action}): {d.was} → {d.now}: {d.message}", markup=False)
        if once:
            console.print(f"{len(done)} job(s) marked")

    if once:
        report(sweep(grace=grace))
        err_console.print(send_owed_emails(), markup=False)
        return
    err_console.print(f"watchdog: sweeping every {interval:g} s (Ctrl-C to stop)")
    run_forever(interval=interval, grace=grace, on_sweep=report)
