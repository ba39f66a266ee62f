"""The JSON API's notification routes: subscribers, rules, deliveries (``wsjobs notify``
through a login).

Each route runs the same shared function as the CLI without a login (subscriptions and
rules are Prefect Variables; the server holds the Prefect credentials, the laptop does
not), behind :func:`.api.endpoint` (Bearer token, actor = the token's user, source
``api``) and the role table:

* subscribe / unsubscribe: :func:`~workspaces_jobs.identity.roles.require_subscription`
  (your own address on any job; other addresses and webhooks on jobs you may notify for);
* rules: ``filters`` (operators add rules and change their own, admins anyone's);
* delivering what is owed for every job acts for every job's owner: admins;
* reading subscribers, rules and the delivery log: every signed-in user.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from workspaces_jobs.errors import NotFound
from workspaces_jobs.web.api import PREFIX, _job_owner, _list, _text, endpoint


def _unsubscribe(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require_subscription
    from workspaces_jobs.notify.subscriptions import unsubscribe

    job_id, owner = _job_owner(request.path_params["job_id"])
    emails, hooks = _list(body, "emails"), _list(body, "webhooks")
    require_subscription(user, emails=emails, webhooks=hooks, job_owner=owner)
    record = unsubscribe(job_id, emails, webhooks=hooks)
    return record.to_value() | {"job_id": record.job_id}


def _subscribers(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.notify.subscriptions import read_subscriptions

    require(user, "read")
    record = read_subscriptions(request.path_params["job_id"])
    return record.to_value() | {"job_id": record.job_id}


def _deliver(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.notify import deliver_owed

    require(user, "notify")  # every job's owner: an admin's (owner unknown)
    return [o.to_dict() for o in deliver_owed(_list(body, "job_ids") or None)]


def _log(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from prefect.client.orchestration import get_client

    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.notify.alerts import delivery_log
    from workspaces_jobs.notify.subscriptions import canonical_job_id
    from workspaces_jobs.server import ensure_api

    require(user, "read")
    wanted: list[str | None] = [
        canonical_job_id(j) for j in request.query_params.getlist("job")
    ] or [None]
    ensure_api()
    rows: list[dict[str, Any]] = []
    with get_client(sync_client=True) as client:
        for job_id in wanted:
            rows += delivery_log(client, job_id)
    return rows


# --- rules --------------------------------------------------------------------------------


def _rules(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.notify.rules import read_rules

    require(user, "read")
    return [r.to_value() for r in read_rules()]


def _rule_owner(name: str) -> tuple[bool, str | None]:
    from workspaces_jobs.notify.rules import read_rules

    found = [r for r in read_rules() if r.name == name]
    return (bool(found), found[0].created_by if found else None)


def _may_change_rule(user: Any, name: str) -> None:
    """Rules are filters with subscriptions: operators add rules and change their own."""
    from workspaces_jobs.identity.roles import require

    require(user, "filters")
    exists, owner = _rule_owner(name)
    if exists:
        require(user, "filters", owner=owner or "")


def _rule_add(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.notify.rules import add_rule
    from workspaces_jobs.reporting.saved import _describe, get_filter

    filter_name = _text(body, "filter")
    name = _text(body, "rule") or None
    _may_change_rule(user, name or filter_name)
    with request.app.state.web.db() as con:  # the filter as the server's history has it
        spec = get_filter(con, filter_name)
    rule = add_rule(
        filter_name, emails=_list(body, "emails"), webhooks=_list(body, "webhooks"),
        name=name, by=user.name, resolved=(spec, _describe(spec)),
    )  # fmt: skip
    return rule.to_value()


def _rule_change(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.notify.rules import remove_rule, set_paused

    name, op = request.path_params["name"], request.path_params["op"]
    if op not in ("pause", "resume", "remove"):
        raise NotFound(f"unknown rule change {op!r}: use pause, resume or remove")
    _may_change_rule(user, name)
    rule = remove_rule(name) if op == "remove" else set_paused(name, op == "pause")
    return rule.to_value()


ROUTES = [
    Route(f"{PREFIX}/jobs/{{job_id}}/unsubscribe", endpoint(_unsubscribe), methods=["POST"]),
    Route(f"{PREFIX}/jobs/{{job_id}}/subscribers", endpoint(_subscribers), methods=["GET"]),
    Route(f"{PREFIX}/notify/deliver", endpoint(_deliver), methods=["POST"]),
    Route(f"{PREFIX}/notify/log", endpoint(_log), methods=["GET"]),
    Route(f"{PREFIX}/rules", endpoint(_rules), methods=["GET"]),
    Route(f"{PREFIX}/rules", endpoint(_rule_add), methods=["POST"]),
    Route(f"{PREFIX}/rules/{{name}}/{{op}}", endpoint(_rule_change), methods=["POST"]),
]
