"""The rule, webhook and delivery-log parts of ``wsjobs notify`` (kept out of notify.py).

``--filter NAME --email A|--webhook URL [--rule R]`` makes or extends a rule; ``--rules``
lists them; ``--pause``/``--resume``/``--remove-rule`` manage one; ``--log`` prints the
delivery log (claims of every email, rule notice and webhook).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from workspaces_jobs.cli.output import console, fail, print_json


def rule_dict(rule: Any) -> dict[str, Any]:
    return {
        "name": rule.name,
        "filter": rule.filter,
        "description": rule.description,
        "emails": list(rule.emails),
        "webhooks": list(rule.webhooks),
        "paused": rule.paused,
        "created_at": rule.created_at,
        "created_by": rule.created_by,
        "spec": rule.spec,
    }


def rules_table(rules: list[Any]) -> Table:
    table = Table("rule", "filter", "means", "emails", "webhooks", "state", "by", title="Rules")
    for r in rules:
        table.add_row(
            r.name,
            r.filter,
            r.description,
            ", ".join(r.emails) or "-",
            ", ".join(r.webhooks) or "-",
            "paused" if r.paused else "active",
            r.created_by or "-",
        )
    return table


def webhooks_table(record: Any) -> Table:
    table = Table("webhook", "subscribed at", "by", title=f"Webhooks of job {record.job_id}")
    for h in record.webhooks:
        table.add_row(h.url, h.subscribed_at or "-", h.subscribed_by or "-")
    return table


def run(
    current: Any,
    mode: str,
    *,
    job_ids: list[str],
    filter_name: str | None,
    rule: str | None,
    emails: list[str],
    webhooks: list[str],
    by: str | None,
    json_out: bool,
) -> None:
    """One rule mode; ``current``: the login to act through (None: act here)."""
    from workspaces_jobs.notify import rules as rules_mod
    from workspaces_jobs.notify.rules import Rule

    def one(value: Any) -> Any:
        made = Rule.from_value(value)
        assert made is not None
        return made

    if mode == "--log":
        _log(current, job_ids, json_out)
        return
    if job_ids:
        fail(f"{mode} takes no job id: a rule is about every job its filter matches")
    if mode == "--filter":
        assert filter_name is not None
        if current is not None:  # by = the token's user: a free-text --by is not sent
            body = {"filter": filter_name, "emails": emails, "webhooks": webhooks, "rule": rule}
            made = one(current.call("POST", "/rules", body))
        else:
            made = rules_mod.add_rule(
                filter_name, emails=emails, webhooks=webhooks, name=rule, by=by
            )
        _show([made], json_out, head=f"Rule {made.name}: every job matching {made.filter!r}")
        return
    if emails or webhooks:
        fail(f"{mode} takes no --email/--webhook (add targets with --filter NAME)")
    if mode == "--rules":
        found = (
            [one(v) for v in current.call("GET", "/rules")]
            if current is not None
            else rules_mod.read_rules()
        )
        _show(found, json_out)
        return
    assert rule is not None
    op = {"--remove-rule": "remove", "--pause": "pause", "--resume": "resume"}[mode]
    if current is not None:
        changed = one(current.call("POST", f"/rules/{rule}/{op}"))
    elif op == "remove":
        changed = rules_mod.remove_rule(rule)
    else:
        changed = rules_mod.set_paused(rule, op == "pause")
    if op == "remove":
        _show([changed], json_out, head=f"Removed rule {changed.name}")
        return
    state = "paused" if changed.paused else "active"
    _show([changed], json_out, head=f"Rule {changed.name} is {state}")


def _show(rules: list[Any], json_out: bool, *, head: str | None = None) -> None:
    if json_out:
        data = [rule_dict(r) for r in rules]
        print_json(data if head is None else data[0])
        return
    if head:
        console.print(head, markup=False)
    if not rules:
        console.print("No rules: make one with wsjobs notify --filter NAME --email ADDRESS")
        return
    console.print(rules_table(rules))


def _log(current: Any, job_ids: list[str], json_out: bool) -> None:
    if current is not None:
        rows = current.call("GET", "/notify/log", params={"job": job_ids})
    else:
        rows = _local_log(job_ids)
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("No deliveries yet.")
        return
    table = Table(
        "claimed at", "job", "kind", "target", "rule", "episode", "state", "tries", "error",
        title="Deliveries",
    )  # fmt: skip
    for r in rows:
        table.add_row(
            str(r["claimed_at"] or "-"),
            str(r["job_id"] or "-"),
            r["kind"],
            str(r["target"] or "-"),
            r["rule"] or "-",
            r["episode"],
            str(r["state"] or "-"),
            str(r["attempts"] if r["attempts"] is not None else "-"),
            str(r["error"] or "-"),
        )
    console.print(table)


def _local_log(job_ids: list[str]) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client

    from workspaces_jobs.notify.alerts import delivery_log
    from workspaces_jobs.notify.subscriptions import canonical_job_id

    with get_client(sync_client=True) as client:
        rows: list[dict[str, Any]] = []
        wanted: list[str | None] = [canonical_job_id(j) for j in job_ids]
        for job_id in wanted or [None]:
            rows += delivery_log(client, job_id)
    return rows
