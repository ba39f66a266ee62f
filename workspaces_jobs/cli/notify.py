"""``wsjobs notify``: subscribe to jobs, list and remove subscribers, deliver what is owed."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from workspaces_jobs.cli.output import console, fail, print_json


def register(app: typer.Typer) -> None:
    app.command()(notify)


def _subscriber_rows(record: Any) -> list[dict[str, Any]]:
    return [
        {
            "email": s.email,
            "status": s.status,
            "attempts": s.attempts,
            "last_error": s.last_error,
            "sent_at": s.sent_at,
            "subscribed_at": s.subscribed_at,
            "subscribed_by": s.subscribed_by,
        }
        for s in record.subscribers
    ]


def subscribers_table(record: Any, *, title: str | None = None) -> Table:
    table = Table("email", "status", "attempts", "sent at", "last error", "by", title=title)
    for s in record.subscribers:
        table.add_row(
            s.email,
            s.status,
            str(s.attempts),
            s.sent_at or "-",
            s.last_error or "-",
            s.subscribed_by or "-",
        )
    return table


def notify(
    job_ids: list[str] = typer.Argument(None, help="Job ids (flow run ids).", show_default=False),
    email: list[str] = typer.Option([], "--email", "-e", help="Address to email; repeatable."),
    list_: bool = typer.Option(False, "--list", "-l", help="Show the jobs' subscribers."),
    remove: bool = typer.Option(False, "--remove", help="Unsubscribe the --email addresses."),
    now: bool = typer.Option(
        False, "--now", help="For jobs that have ended: subscribe and send the summary now."
    ),
    deliver: bool = typer.Option(
        False,
        "--deliver",
        help="Send every email owed for ended jobs (all jobs, or the JOB_IDS given).",
    ),
    by: str | None = typer.Option(None, "--by", help="Who subscribes (default: OS user)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Email addresses when jobs end. A job must be Pending or In progress (or use --now).

    \b
    wsjobs notify JOB_ID --email ops@example.com       subscribe
    wsjobs notify --list JOB_ID                        subscribers and delivery state
    wsjobs notify JOB_ID --remove --email ops@example.com
    wsjobs notify --deliver                            send what is owed (after a crash,
                                                       an SMTP outage, a cancel while Pending)
    """
    from workspaces_jobs.cli.jobs import connect

    job_ids = list(job_ids or [])
    flags = {"--list": list_, "--remove": remove, "--deliver": deliver, "--now": now}
    modes = [name for name, on in flags.items() if on]
    if len(modes) > 1:
        fail(f"{' and '.join(modes)} cannot be combined: choose one")
    if (list_ or deliver) and email:
        fail(f"{modes[0]} takes no --email: drop it, or subscribe without {modes[0]}")
    if deliver:
        connect()
        _deliver(job_ids or None, json_out)
        return
    if not job_ids:
        fail("no job id given: wsjobs notify JOB_ID --email ADDRESS (ids: `wsjobs list`)")
    if list_:
        connect()
        _list(job_ids, json_out)
        return
    if not email:
        fail("no --email given: wsjobs notify JOB_ID --email ADDRESS")
    from workspaces_jobs.notify import normalize_emails, subscribe, unsubscribe

    addresses = email if remove else normalize_emails(email)  # bad address: fail before any I/O
    connect()
    records = []
    if remove:
        records = [unsubscribe(job_id, addresses) for job_id in job_ids]
    else:
        _check_all(job_ids, now)
        records = [subscribe(job_id, addresses, by=by, now=now) for job_id in job_ids]
    if json_out:
        data = [{"job_id": r.job_id, "subscribers": _subscriber_rows(r)} for r in records]
        print_json(data if len(data) > 1 else data[0])
        return
    verb = "Removed" if remove else "Subscribed"
    for r in records:
        console.print(f"{verb} {', '.join(addresses)} — job {r.job_id}", markup=False)
        console.print(subscribers_table(r))


def _check_all(job_ids: list[str], now: bool) -> None:
    """Refuse the whole request before writing anything if one job cannot be subscribed."""
    from prefect.client.orchestration import get_client

    from workspaces_jobs.notify.subscriptions import canonical_job_id, check_subscribable

    with get_client(sync_client=True) as client:
        for job_id in job_ids:
            check_subscribable(client, canonical_job_id(job_id), now=now)


def _list(job_ids: list[str], json_out: bool) -> None:
    from workspaces_jobs.notify import read_subscriptions

    records = [read_subscriptions(job_id) for job_id in job_ids]
    if json_out:
        data = [{"job_id": r.job_id, "subscribers": _subscriber_rows(r)} for r in records]
        print_json(data if len(data) > 1 else data[0])
        return
    for r in records:
        if not r.subscribers:
            console.print(f"Job {r.job_id}: no subscribers", markup=False)
        else:
            console.print(subscribers_table(r, title=f"Job {r.job_id}"))


def _deliver(job_ids: list[str] | None, json_out: bool) -> None:
    from workspaces_jobs.notify import deliver_owed

    outcomes = deliver_owed(job_ids)
    if json_out:
        print_json([o.to_dict() for o in outcomes])
        return
    if not outcomes:
        console.print("Nothing owed: every subscriber of an ended job has had its email.")
        return
    table = Table("job", "email", "result", "attempts", "error", title="Deliveries")
    for o in outcomes:
        table.add_row(o.job_id, o.email, o.result, str(o.attempts), o.error or "-")
    console.print(table)
    if any(o.result in ("failed", "waiting") for o in outcomes):
        raise typer.Exit(1)
