"""``wsjobs notify``: subscribe to jobs, list and remove subscribers, deliver what is owed."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from workspaces_jobs.activity import local_user
from workspaces_jobs.cli import notifyrules
from workspaces_jobs.cli.output import console, fail, print_json


def register(app: typer.Typer) -> None:
    app.command()(notify)


def _subscriber_rows(record: Any) -> list[dict[str, Any]]:
    hooks = [
        {"webhook": h.url, "subscribed_at": h.subscribed_at, "subscribed_by": h.subscribed_by}
        for h in record.webhooks
    ]
    return hooks + [
        {
            "email": s.email,
            "status": s.status,
            "attempts": s.attempts,
            "last_error": s.last_error,
            "sent_at": s.sent_at,
            "subscribed_at": s.subscribed_at,
            "subscribed_by": s.subscribed_by,
            "recovery_status": s.recovery_status,
            "recovery_sent_at": s.recovery_sent_at,
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
    webhook: list[str] = typer.Option(
        [], "--webhook", "-w", help="URL to POST a signed JSON notice to; repeatable."
    ),
    filter_: str | None = typer.Option(
        None, "--filter", "-f", help="Subscribe to a saved or predefined filter (a rule)."
    ),
    rule: str | None = typer.Option(
        None, "--rule", help="Name of the rule made by --filter (default: the filter's name)."
    ),
    rules: bool = typer.Option(False, "--rules", help="List the notification rules."),
    pause: str | None = typer.Option(None, "--pause", help="Pause the rule NAME."),
    resume: str | None = typer.Option(None, "--resume", help="Resume the paused rule NAME."),
    remove_rule: str | None = typer.Option(None, "--remove-rule", help="Delete the rule NAME."),
    log: bool = typer.Option(
        False, "--log", help="The delivery log (all jobs, or the JOB_IDS given)."
    ),
    by: str | None = typer.Option(None, "--by", help="Who subscribes (default: OS user)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Notify people and systems when jobs end: per job, or on every job matching a filter.

    \b
    wsjobs notify JOB_ID --email ops@example.com       subscribe (Pending or In progress)
    wsjobs notify JOB_ID --webhook https://chat/hook   a signed JSON POST instead
    wsjobs notify --list JOB_ID                        subscribers and delivery state
    wsjobs notify JOB_ID --remove --email ops@example.com
    wsjobs notify --filter errors-this-week --email ops@example.com   a rule
    wsjobs notify --rules | --pause R | --resume R | --remove-rule R
    wsjobs notify --log [JOB_ID]                       every delivery and how it ended
    wsjobs notify --deliver                            send what is owed (after a crash,
                                                       an SMTP outage, a cancel while Pending)
    """
    from workspaces_jobs.cli.connection import connect

    job_ids = list(job_ids or [])
    rule_modes = {
        "--filter": filter_ is not None,
        "--rules": rules,
        "--pause": pause is not None,
        "--resume": resume is not None,
        "--remove-rule": remove_rule is not None,
        "--log": log,
    }
    chosen = [name for name, on in rule_modes.items() if on]
    if chosen:
        others = chosen[1:] + [n for n, on in (("--list", list_), ("--deliver", deliver)) if on]
        if others or remove or now:
            fail(f"{chosen[0]} cannot be combined with {', '.join(others) or '--remove/--now'}")
        from workspaces_jobs.cli.login import remote

        if (current := remote()) is None:
            connect()
        notifyrules.run(
            current,
            chosen[0],
            job_ids=job_ids,
            filter_name=filter_,
            rule=rule or pause or resume or remove_rule,
            emails=email,
            webhooks=webhook,
            by=by,
            json_out=json_out,
        )
        return
    if rule is not None:
        fail("--rule names the rule made by --filter: add --filter NAME")
    flags = {"--list": list_, "--remove": remove, "--deliver": deliver, "--now": now}
    modes = [name for name, on in flags.items() if on]
    if len(modes) > 1:
        fail(f"{' and '.join(modes)} cannot be combined: choose one")
    if (list_ or deliver) and (email or webhook):
        fail(f"{modes[0]} takes no --email/--webhook: drop it, or subscribe without {modes[0]}")
    from workspaces_jobs.cli.login import remote

    current = remote()
    if deliver:
        if current is None:
            connect()
        _deliver(current, job_ids or None, json_out)
        return
    if not job_ids:
        fail("no job id given: wsjobs notify JOB_ID --email ADDRESS (ids: `wsjobs list`)")
    if list_:
        if current is None:
            connect()
        _list(current, job_ids, json_out)
        return
    if not email and not webhook:
        fail("no --email or --webhook given: wsjobs notify JOB_ID --email ADDRESS")
    from workspaces_jobs.notify import normalize_emails, subscribe, unsubscribe
    from workspaces_jobs.notify.webhooks import check_url

    # Bad addresses and URLs fail before any I/O.
    addresses = email if remove else (normalize_emails(email) if email else [])
    urls = webhook if remove else [check_url(u) for u in webhook]
    records: list[Any] = []
    if current:
        from workspaces_jobs.notify.subscriptions import Record

        verb = "unsubscribe" if remove else "notify"
        body: dict[str, Any] = {"emails": addresses, "webhooks": urls, "now": now}
        records = [
            Record.from_value(d["job_id"], d)
            for d in (current.call("POST", f"/jobs/{job_id}/{verb}", body) for job_id in job_ids)
        ]
    elif remove:
        connect()
        records = [unsubscribe(job_id, addresses, webhooks=urls) for job_id in job_ids]
    else:
        connect()
        _check_all(job_ids, now)
        records = [
            subscribe(job_id, addresses, by=by, now=now, webhooks=urls, who=local_user())
            for job_id in job_ids
        ]
    if json_out:
        data = [{"job_id": r.job_id, "subscribers": _subscriber_rows(r)} for r in records]
        print_json(data if len(data) > 1 else data[0])
        return
    verb = "Removed" if remove else "Subscribed"
    for r in records:
        console.print(f"{verb} {', '.join([*addresses, *urls])} — job {r.job_id}", markup=False)
        console.print(subscribers_table(r))
        if r.webhooks:
            console.print(notifyrules.webhooks_table(r))


def _check_all(job_ids: list[str], now: bool) -> None:
    """Refuse the whole request before writing anything if one job cannot be subscribed."""
    from prefect.client.orchestration import get_client

    from workspaces_jobs.notify.subscriptions import canonical_job_id, check_subscribable

    with get_client(sync_client=True) as client:
        for job_id in job_ids:
            check_subscribable(client, canonical_job_id(job_id), now=now)


def _list(current: Any, job_ids: list[str], json_out: bool) -> None:
    from workspaces_jobs.notify import read_subscriptions
    from workspaces_jobs.notify.subscriptions import Record

    if current is not None:
        records = [
            Record.from_value(d["job_id"], d)
            for d in (current.call("GET", f"/jobs/{j}/subscribers") for j in job_ids)
        ]
    else:
        records = [read_subscriptions(job_id) for job_id in job_ids]
    if json_out:
        data = [{"job_id": r.job_id, "subscribers": _subscriber_rows(r)} for r in records]
        print_json(data if len(data) > 1 else data[0])
        return
    for r in records:
        if not r.subscribers and not r.webhooks:
            console.print(f"Job {r.job_id}: no subscribers", markup=False)
        if r.subscribers:
            console.print(subscribers_table(r, title=f"Job {r.job_id}"))
        if r.webhooks:
            console.print(notifyrules.webhooks_table(r))


def _deliver(current: Any, job_ids: list[str] | None, json_out: bool) -> None:
    from types import SimpleNamespace

    from workspaces_jobs.notify import deliver_owed

    if current is not None:
        done = current.call("POST", "/notify/deliver", {"job_ids": job_ids or []})
        outcomes: list[Any] = [SimpleNamespace(**d, to_dict=lambda d=d: d) for d in done]
    else:
        outcomes = deliver_owed(job_ids)
    if json_out:
        print_json([o.to_dict() for o in outcomes])
        return
    if not outcomes:
        console.print("Nothing owed: every subscriber of an ended job has had its email.")
        return
    table = Table("job", "target", "rule", "result", "attempts", "error", title="Deliveries")
    for o in outcomes:
        table.add_row(o.job_id, o.email, o.rule or "-", o.result, str(o.attempts), o.error or "-")
    console.print(table)
    if any(o.result in ("failed", "waiting") for o in outcomes):
        raise typer.Exit(1)
