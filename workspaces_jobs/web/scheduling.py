"""Web pages for scheduling: the Schedules page and a Run form for each action.

* ``GET /schedules`` — every schedule (``wsjobs schedules``): action, target, parameters,
  cadence, zone, next runs, paused, creator, with Pause/Resume/Delete buttons;
  ``POST /schedules/change`` does one of them.
* ``GET /run`` — the actions; ``GET /run/{action}`` — a form built from the action's
  declared parameters (description, default, required), the target (devices, tags, all),
  info, and when: now, at a time, or on a schedule (cron or interval, with a zone);
  ``POST /run/{action}`` validates exactly as the CLI does and runs the job, creates the
  later job or the schedule — or shows the form again with the one-line error, nothing
  created.

Every POST goes through the list's CSRF check (token field + cookie, Origin/Referer, Host:
:func:`workspaces_jobs.web.routes._checked_form`); templates autoescape. The owner of what
is created is the signed-in user; running needs an operator, a schedule's pause/resume/
delete its creator or an admin (:mod:`workspaces_jobs.identity.roles`), refused with 403
on the server whatever the page showed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from workspaces_jobs.errors import Forbidden, user_message
from workspaces_jobs.identity import require
from workspaces_jobs.web import routes as web

#: When a Run form runs its job.
WHEN = ("now", "at", "cron", "every")
_CHANGES = ("pause", "resume", "delete")


@dataclass
class RunForm:
    """What a Run form shows: the action's declared parameters and the values entered."""

    action: str
    description: str
    params: list[dict[str, Any]]
    devices: list[str]
    tags: list[str]
    values: dict[str, str] = field(default_factory=dict)
    selected: list[str] = field(default_factory=list)
    problem: str | None = None


def _one(form: dict[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[-1].strip()


def run_form(action: str, form: dict[str, list[str]] | None = None) -> RunForm:
    """The form of ``action`` (NotFound for an unknown one), filled with ``form``."""
    from workspaces_jobs.catalog import load_actions, load_inventory
    from workspaces_jobs.jobs import action_names, flow_for

    flow_for(action)  # unknown action: NotFound/CatalogError, one line
    declared = load_actions().get(action)
    params = [
        {
            "name": name,
            "description": spec.description,
            "default": spec.default or "",
            "required": spec.required,
        }
        for name, spec in (declared.params.items() if declared else [])
    ]
    inventory = load_inventory()
    values = {k: _one(form, k) for k in form} if form else {}
    return RunForm(
        action=action,
        description=action_names().get(action, ""),
        params=params,
        devices=[d.name for d in inventory.devices],
        tags=sorted({t for d in inventory.devices for t in d.tags}),
        values=values,
        selected=list((form or {}).get("device", [])),
    )


def submit_run(action: str, form: dict[str, list[str]], owner: str) -> tuple[str, str]:
    """Validate and do what the form asks; return (kind, id or name). BadInput on mistakes."""
    from workspaces_jobs.catalog import load_actions
    from workspaces_jobs.errors import BadInput
    from workspaces_jobs.jobs import submit_job
    from workspaces_jobs.schedules import create_schedule, job_spec, parse_cadence, submit_later

    target = [d for d in form.get("device", []) if d.strip()]
    target += [f"tag:{t}" for t in form.get("tag", []) if t.strip()]
    if _one(form, "all"):
        target.append("all")
    if not target:
        raise BadInput("no device selected: tick devices, a tag or All devices")
    declared = load_actions().get(action)
    names = list(declared.params) if declared else []
    params = {n: _one(form, f"param_{n}") for n in names if _one(form, f"param_{n}") != ""}
    info = _one(form, "info")
    when = _one(form, "when") or "now"
    if when not in WHEN:
        raise BadInput(f"unknown choice {when!r} for when: use one of {', '.join(WHEN)}")
    tz = _one(form, "tz") or None
    if when == "now":
        return "job", submit_job(action, target=target, params=params, info=info, owner=owner)
    if when == "at":
        cadence = parse_cadence(at=_one(form, "at").replace("T", " ") or None, tz=tz)
        assert cadence.first is not None
        spec = job_spec(action, target=target, params=params, info=info, owner=owner)
        job_id, _ = submit_later(spec, cadence.first)
        return "job", job_id
    cadence = parse_cadence(
        cron=_one(form, "cron") if when == "cron" else None,
        every=_one(form, "every") if when == "every" else None,
        tz=tz,
    )
    made = create_schedule(
        action,
        target=target,
        cadence=cadence,
        params=params,
        info=info,
        owner=owner,
        name=_one(form, "name") or None,
    )
    return "schedule", made.name


def _may(request: Request, action: Any, owner: str | None = None) -> Response | None:
    try:
        require(web.me(request), action, owner=owner)
    except Forbidden as exc:
        return web.forbidden(request, exc)
    return None


async def actions_page(request: Request) -> Response:
    from workspaces_jobs.jobs import action_names

    if refused := _may(request, "run"):
        return refused
    actions = await run_in_threadpool(action_names)
    return web._page(request, "run_actions.html.j2", actions=actions, tz=None)


async def run_page(request: Request) -> Response:
    action = request.path_params["action"]
    if refused := _may(request, "run"):
        return refused
    try:
        form = await run_in_threadpool(run_form, action)
    except (ValueError, LookupError) as exc:
        return web._error(request, user_message(exc), 404)
    return web._page(request, "run_form.html.j2", f=form, when_choices=WHEN, tz=None)


async def run_submit(request: Request) -> Response:
    action = request.path_params["action"]
    try:
        form = await web._checked_form(request)
    except web.Refused:
        return web._refused()
    state = web._state(request)
    when = _one(form, "when")
    if refused := _may(request, "schedule" if when in ("cron", "every") else "run"):
        return refused
    try:
        kind, ref = await run_in_threadpool(submit_run, action, form, web.me(request).name)
    except (ValueError, LookupError) as exc:
        try:
            shown = await run_in_threadpool(run_form, action, form)
        except (ValueError, LookupError):
            return web._error(request, user_message(exc), 404)
        shown.problem = user_message(exc)
        return web._page(
            request, "run_form.html.j2", status_code=400, f=shown, when_choices=WHEN, tz=None
        )
    if kind == "schedule":
        key = state.flashes.add("ok", f"Created schedule {ref}.")
        return RedirectResponse(f"/schedules?flash={key}", status_code=303)
    state.syncer.run_once()
    key = state.flashes.add("ok", f"Created job {ref}.")
    return RedirectResponse(f"/jobs/{quote(ref)}?flash={key}", status_code=303)


async def schedules_page(request: Request) -> Response:
    from workspaces_jobs.reporting import windows
    from workspaces_jobs.schedules import list_schedules

    problem = None
    try:
        items = await run_in_threadpool(list_schedules)
    except Exception as exc:  # the API is down: say so on the page
        items, problem = [], user_message(exc)
    flash = web._state(request).flashes.pop(request.query_params.get("flash"))
    zones = {
        s.name: windows.resolve_zone(s.timezone if s.timezone != "-" else "UTC") for s in items
    }
    return web._page(
        request,
        "schedules.html.j2",
        items=items,
        zones=zones,
        problem=problem,
        flash=flash,
        tz=None,
    )


async def schedule_change(request: Request) -> Response:
    from workspaces_jobs.schedules import delete_schedule, pause_schedule, resume_schedule

    try:
        form = await web._checked_form(request)
    except web.Refused:
        return web._refused()
    state = web._state(request)
    name, op = _one(form, "name"), _one(form, "op")
    if refused := _may(request, "schedule"):
        return refused
    if web.me(request).role != "admin":
        owner = await run_in_threadpool(_schedule_owner, name)
        if owner is not None and (refused := _may(request, "schedule", owner)):
            return refused
    verbs = {"pause": pause_schedule, "resume": resume_schedule, "delete": delete_schedule}
    if op not in verbs:
        key = state.flashes.add("error", f"unknown change {op!r}: use pause, resume or delete")
    else:
        try:
            await run_in_threadpool(verbs[op], name)
        except (ValueError, LookupError) as exc:
            key = state.flashes.add("error", user_message(exc))
        else:
            done = {"pause": "Paused", "resume": "Resumed", "delete": "Deleted"}[op]
            key = state.flashes.add("ok", f"{done} schedule {name}.")
            if op != "resume":
                state.syncer.run_once()  # its removed Pending runs leave the list
    return RedirectResponse(f"/schedules?flash={key}", status_code=303)


def _schedule_owner(name: str) -> str | None:
    """Who created a schedule (``-`` for prefect.yaml ones: admins only); None if unknown."""
    from workspaces_jobs.schedules import list_schedules

    return next((s.created_by for s in list_schedules() if s.name == name), None)


#: The routes of this module, added where the app assembles its routes.
ROUTES = [
    Route("/schedules", schedules_page, methods=["GET"]),
    Route("/schedules/change", schedule_change, methods=["POST"]),
    Route("/run", actions_page, methods=["GET"]),
    Route("/run/{action}", run_page, methods=["GET"]),
    Route("/run/{action}", run_submit, methods=["POST"]),
]
