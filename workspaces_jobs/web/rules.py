"""The web view's notification rules page: ``/rules`` lists, creates, pauses and removes.

The same rules as ``wsjobs notify --filter`` (Prefect Variables, :mod:`..notify.rules`).
Every change is a POST through the routes' CSRF check, answered with a redirect carrying
a flash message (post/redirect/get), like the rest of the view. The filter is read from
the history file this server already holds open, then copied into the rule.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from workspaces_jobs.errors import Forbidden, user_message
from workspaces_jobs.identity import require
from workspaces_jobs.web import routes


def _one(form: dict[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[-1].strip()


async def rules_page(request: Request) -> Response:
    from workspaces_jobs.notify.rules import read_rules
    from workspaces_jobs.reporting.saved import list_filters

    state = routes._state(request)

    def work() -> tuple[list[Any], list[Any], str | None]:
        with state.db() as con:
            filters = list_filters(con)
        try:
            return read_rules(), filters, None
        except Exception as exc:  # the API is down: say so on the page
            return [], filters, user_message(exc)

    rules, filters, problem = await run_in_threadpool(work)
    flash = state.flashes.pop(request.query_params.get("flash"))
    if problem and flash is None:
        flash = ("error", f"Could not read the rules: {problem}")
    return routes._page(
        request, "rules.html.j2", rules=rules, filters=filters, flash=flash, tz=None
    )


def _rule_owner(name: str) -> str | None:
    """Who created a rule; None when there is no such rule (or the API cannot say)."""
    from workspaces_jobs.notify.rules import read_rules

    return next((r.created_by for r in read_rules() if r.name == name), None)


async def _may(request: Request, rule: str | None) -> Response | None:
    """Rules are filters with subscriptions: an operator changes its own, an admin any."""
    user = routes.me(request)
    try:
        require(user, "filters")
        if rule and user.role != "admin":
            owner = await run_in_threadpool(_rule_owner, rule)
            if owner is not None:
                require(user, "filters", owner=owner)
    except Forbidden as exc:
        return routes.forbidden(request, exc)
    return None


def _back(request: Request, kind: str, text: str) -> Response:
    key = routes._state(request).flashes.add(kind, text)
    return RedirectResponse(f"/rules?flash={key}", status_code=303)


async def rule_add(request: Request) -> Response:
    from workspaces_jobs.notify import rules as rules_mod
    from workspaces_jobs.reporting.saved import _describe, get_filter

    try:
        form = await routes._checked_form(request)
    except routes.Refused:
        return routes._refused()
    state = routes._state(request)
    filter_name, name = _one(form, "filter"), _one(form, "rule") or None
    emails = [e for e in _one(form, "email").replace(",", " ").split() if e]
    hooks = [u for u in _one(form, "webhook").split() if u]
    if refused := await _may(request, name or filter_name):
        return refused
    if not filter_name:
        return _back(request, "error", "Pick the filter the rule follows.")
    by = routes.me(request).name

    def work() -> Any:
        with state.db() as con:
            spec = get_filter(con, filter_name)
        return rules_mod.add_rule(
            filter_name,
            emails=emails,
            webhooks=hooks,
            name=name,
            by=by,
            resolved=(spec, _describe(spec)),
        )

    try:
        rule = await run_in_threadpool(work)
    except Exception as exc:  # bad address/URL/filter: one line, nothing changed
        return _back(request, "error", user_message(exc))
    return _back(request, "ok", f"Rule {rule.name}: every job matching {rule.filter} is notified.")


async def _change(request: Request, action: str) -> Response:
    from workspaces_jobs.notify import rules as rules_mod

    try:
        form = await routes._checked_form(request)
    except routes.Refused:
        return routes._refused()
    name = _one(form, "rule")
    if refused := await _may(request, name):
        return refused

    def work() -> Any:
        if action == "remove":
            return rules_mod.remove_rule(name)
        return rules_mod.set_paused(name, action == "pause")

    try:
        rule = await run_in_threadpool(work)
    except Exception as exc:
        return _back(request, "error", user_message(exc))
    done = {"remove": "removed", "pause": "paused", "resume": "active again"}[action]
    return _back(request, "ok", f"Rule {rule.name} {done}.")


async def rule_pause(request: Request) -> Response:
    return await _change(request, "pause")


async def rule_resume(request: Request) -> Response:
    return await _change(request, "resume")


async def rule_remove(request: Request) -> Response:
    return await _change(request, "remove")


ROUTES = [
    Route("/rules", rules_page, methods=["GET"]),
    Route("/rules/add", rule_add, methods=["POST"]),
    Route("/rules/pause", rule_pause, methods=["POST"]),
    Route("/rules/resume", rule_resume, methods=["POST"]),
    Route("/rules/remove", rule_remove, methods=["POST"]),
]
