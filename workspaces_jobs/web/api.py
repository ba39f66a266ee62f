"""The JSON API under ``/api/v1``: every action, as a token's user, roles enforced here.

Why it exists (issue 18): Prefect OSS has one shared credential and no users, so anyone
who reaches the Prefect API may cancel, kill or rerun any job. Roles can only be enforced
where the product itself answers: this server. ``wsjobs login URL`` gets a personal token
from ``POST /api/v1/login`` and the CLI then acts through these routes as that user; the
Prefect credentials stay with the server, its workers and admins.

Every route but ``login`` needs ``Authorization: Bearer <token>``
(:func:`identity.accounts.user_for_token`); every acting route asks
:func:`identity.roles.require` with the target's owner (the job's owner, the schedule's
creator) and records the action with source ``api`` (:func:`activity.acting_as`). No
cookie is read, so there is no CSRF to guard against (a browser cannot set the header on
a cross-site form). Errors are JSON ``{"error": one line, "exit_code": n}`` with the HTTP
status the error stands for (401, 403, 400/404, 409 for a job whose status refuses the
action, 503 when Prefect does not answer) and the CLI exit code it ends with.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from workspaces_jobs import activity
from workspaces_jobs.errors import (
    BadInput,
    Forbidden,
    NotFound,
    ServerUnreachable,
    WsJobsError,
    user_message,
)

PREFIX = "/api/v1"
#: The one answer to a wrong user name or a wrong password (no hint which was wrong).
WRONG_LOGIN = "wrong user name or password"


class Unauthorized(WsJobsError):
    """No token, or one that is unknown, revoked or of a disabled user."""

    exit_code = 8


def _error(status: int, message: str, code: int) -> JSONResponse:
    return JSONResponse({"error": message, "exit_code": code}, status_code=status)


def _status_of(exc: WsJobsError) -> int:
    from workspaces_jobs.lifecycle import LifecycleError

    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, LifecycleError):
        return 409
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BadInput):
        return 400
    if isinstance(exc, ServerUnreachable):
        return 503
    return 500


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("no API token: run `wsjobs login URL` (header Authorization: Bearer)")
    return token.strip()


def _user(request: Request) -> Any:
    from workspaces_jobs.identity.accounts import user_for_token

    user = user_for_token(_bearer(request))
    if user is None:
        raise Unauthorized(
            "the API token is unknown, revoked or its user disabled: run `wsjobs login URL`"
        )
    return user


Handler = Callable[[Request, Any, dict[str, Any]], Any]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, read the JSON body, run ``handler`` in a thread as the token's user
    (source ``api``), and turn the product's errors into JSON answers."""

    async def route(request: Request) -> Response:
        body: dict[str, Any] = {}
        if request.method == "POST":
            try:
                raw = await request.json() if await request.body() else {}
            except ValueError:
                return _error(400, "the request body is not JSON", 4)
            if not isinstance(raw, dict):
                return _error(400, "the request body must be a JSON object", 4)
            body = raw

        def work() -> Any:
            user = _user(request)
            with activity.acting_as(user.name, "api"):
                return handler(request, user, body)

        try:
            result = await run_in_threadpool(work)
        except WsJobsError as exc:
            return _error(_status_of(exc), user_message(exc), exc.exit_code)
        except (ValueError, LookupError) as exc:  # older errors that are bad input
            return _error(400, user_message(exc), 4)
        return Response(json.dumps(result, default=_plain), media_type="application/json")

    return route


def _plain(value: Any) -> Any:
    """JSON for what job facts hold: times as ISO text, anything else as its text."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


# --- helpers ------------------------------------------------------------------------------


def _text(body: dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadInput(f"{key} must be a string")
    return value


def _list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{key} must be a list of strings")
    return value


def _job_owner(job_id: str) -> tuple[str, str]:
    """The full id and the owner of a job, read from Prefect (the owner tag)."""
    from prefect.client.orchestration import get_client

    from workspaces_jobs import runmeta
    from workspaces_jobs.gateway import read_flow_run, resolve_job_id
    from workspaces_jobs.server import ensure_api

    ensure_api()
    full = resolve_job_id(job_id)
    with get_client(sync_client=True) as client:
        flow_run = read_flow_run(client, full)
    tags = list(flow_run.tags or [])
    owner = runmeta.tag_value(tags, runmeta.OWNER_TAG)
    return full, owner or str((flow_run.parameters or {}).get("owner") or "")


# --- sign-in ------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    """``{"user", "password", "label"?}`` → a new personal token (shown once).

    Throttled by the web sign-in's own :class:`.gate.SignInThrottle` (per user name and
    per address): the same failures count, whichever door they came through."""
    from workspaces_jobs.identity.accounts import issue_token
    from workspaces_jobs.web.gate import config_of, wait_text

    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the request body is not JSON", 4)
    name = body.get("user") if isinstance(body, dict) else None
    password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(name, str) or not isinstance(password, str):
        return _error(400, 'send {"user": NAME, "password": PASSWORD}', 4)
    address = request.client.host if request.client else "-"
    user, wait = await config_of(request).throttle.sign_in(name, password, address)
    if wait:
        return _error(429, f"too many failed sign-ins: {wait_text(wait)}", 8)
    if user is None:
        return _error(401, WRONG_LOGIN, 8)
    label = body.get("label") if isinstance(body.get("label"), str) else "wsjobs login"
    token = await run_in_threadpool(issue_token, user.name, label)
    await run_in_threadpool(activity.record, user.name, "login", source="api", detail=label)
    return JSONResponse({"token": token, "user": user.name, "role": user.role})


def _logout(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.accounts import revoke_token

    revoked = revoke_token(_bearer(request))
    activity.record(user.name, "logout", source="api")
    return {"revoked": revoked, "user": user.name}


def _whoami(request: Request, user: Any, body: dict[str, Any]) -> Any:
    return {"user": user.name, "role": user.role}


# --- jobs ---------------------------------------------------------------------------------


def _list_jobs(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require

    require(user, "read")
    q = request.query_params
    try:
        limit = max(1, min(int(q.get("limit", "50")), 1000))
    except ValueError:
        raise BadInput("limit must be a whole number") from None
    where: list[str] = ["TRUE"]
    params: dict[str, Any] = {"n": limit}
    for key in ("status", "owner", "action"):
        if q.get(key):
            where.append(f"{key} = ${key}")  # the key is one of three fixed names
            params[key] = q[key]
    with activity.reading() as con:
        cur = con.cursor().execute(
            "SELECT id, action, info, owner, status, reason, created, started, ended, canceled_by"
            f" FROM jobs WHERE {' AND '.join(where)}"
            " ORDER BY coalesce(started, expected_start, created) DESC LIMIT $n",
            params,
        )
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    return [
        {
            k: (v.isoformat() if hasattr(v, "isoformat") else v)
            for k, v in zip(names, r, strict=True)
        }
        for r in rows
    ]


def _show(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.jobs import read_job

    require(user, "read")
    job = read_job(request.path_params["job_id"], with_logs=False)
    data = job.to_dict()
    try:
        data["notes"] = [n.to_dict() for n in activity.job_notes(job.id)]
        data["activity"] = [a.to_dict() for a in activity.job_activity(job.id)]
    except WsJobsError:  # no history yet: the job is still shown
        data["notes"], data["activity"] = [], []
    return data


def _run(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.jobs import submit_job

    require(user, "run")
    action = _text(body, "action")
    target = _list(body, "target")
    if not action or not target:
        raise BadInput('send {"action": NAME, "target": [DEVICE, "tag:T" or "all"]}')
    params = body.get("params") or {}
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise BadInput("params must be an object of strings")
    at, in_, tz = _text(body, "at") or None, _text(body, "in") or None, _text(body, "tz") or None
    if at or in_ or tz:
        return _run_later(user, action, target, params, _text(body, "info"), at, in_, tz)
    job_id = submit_job(
        action, target=target, params=params, info=_text(body, "info"), owner=user.name,
        notify=_list(body, "notify"),
    )  # fmt: skip
    activity.record_run(job_id, action)
    return {"id": job_id, "status": "Pending", "owner": user.name}


def _run_later(
    user: Any,
    action: str,
    target: list[str],
    params: dict[str, str],
    info: str,
    at: str | None,
    in_: str | None,
    tz: str | None,
) -> Any:
    """``run --at/--in``: a Pending job the worker starts when due, owned by the token's
    user (the same validation as the CLI: a time in the past, a bad zone, ...)."""
    from workspaces_jobs.schedules import job_spec, parse_cadence, submit_later

    if not (at or in_):
        raise BadInput('tz needs at: send e.g. {"at": "02:00", "tz": "Europe/Berlin"}')
    cadence = parse_cadence(at=at, in_=in_, tz=tz)
    assert cadence.first is not None
    spec = job_spec(action, target=target, params=params, info=info, owner=user.name)
    job_id, warning = submit_later(spec, cadence.first)
    activity.record_run(job_id, action, detail=f"at {cadence.first.isoformat()}")
    return {
        "id": job_id, "status": "Pending", "owner": user.name,
        "expected_start": cadence.first.isoformat(), "warning": warning,
    }  # fmt: skip


def _acting(verb: str) -> Handler:
    def handler(request: Request, user: Any, body: dict[str, Any]) -> Any:
        from workspaces_jobs.identity.roles import require
        from workspaces_jobs.lifecycle import cancel_job, kill_job, rerun_job

        job_id, owner = _job_owner(request.path_params["job_id"])
        require(user, verb, owner=owner)  # type: ignore[arg-type]
        if verb == "cancel":
            return cancel_job(job_id, by=user.name).to_dict()
        if verb == "kill":
            return kill_job(job_id, by=user.name).to_dict()
        res = rerun_job(job_id, failed_only=bool(body.get("failed_only")), owner=user.name)
        return res.to_dict() | {"status": "Pending"}

    return handler


def _notify(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require_subscription
    from workspaces_jobs.notify.signup import subscribe

    job_id, owner = _job_owner(request.path_params["job_id"])
    emails, hooks, now = _list(body, "emails"), _list(body, "webhooks"), bool(body.get("now"))
    require_subscription(user, emails=emails, webhooks=hooks, job_owner=owner, now=now)
    record = subscribe(job_id, emails, by=user.name, now=now, webhooks=hooks)
    return record.to_value() | {"job_id": record.job_id}


def _note(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require

    require(user, "note")
    job_id, _ = _job_owner(request.path_params["job_id"])
    note = activity.add_note(job_id, user.name, _text(body, "text"))
    return note.to_dict()


# --- schedules ----------------------------------------------------------------------------


def _schedules(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.schedules import list_schedules

    require(user, "read")
    return [s.to_dict() for s in list_schedules()]


def _schedule(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.schedules import create_schedule, parse_cadence

    require(user, "schedule")
    cadence = parse_cadence(
        at=_text(body, "at") or None, in_=_text(body, "in") or None,
        cron=_text(body, "cron") or None, every=_text(body, "every") or None,
        tz=_text(body, "tz") or None,
    )  # fmt: skip
    made = create_schedule(
        _text(body, "action"), target=_list(body, "target"), cadence=cadence,
        params=body.get("params") or {}, info=_text(body, "info"), owner=user.name,
        name=_text(body, "name") or None,
    )  # fmt: skip
    return made.to_dict()


def _schedule_change(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.schedules import (
        delete_schedule,
        list_schedules,
        pause_schedule,
        resume_schedule,
    )

    name, op = request.path_params["name"], request.path_params["op"]
    verbs = {"pause": pause_schedule, "resume": resume_schedule, "delete": delete_schedule}
    if op not in verbs:
        raise NotFound(f"unknown schedule change {op!r}: use pause, resume or delete")
    found = [s for s in list_schedules() if s.name == name]
    if not found:
        raise NotFound(f"no schedule named {name!r}: see `wsjobs schedules`")
    require(user, "schedule", owner=found[0].created_by)
    verbs[op](name)
    return {"name": name, "done": op}


ROUTES = [
    Route(f"{PREFIX}/login", login, methods=["POST"]),
    Route(f"{PREFIX}/logout", endpoint(_logout), methods=["POST"]),
    Route(f"{PREFIX}/whoami", endpoint(_whoami), methods=["GET"]),
    Route(f"{PREFIX}/jobs", endpoint(_list_jobs), methods=["GET"]),
    Route(f"{PREFIX}/jobs", endpoint(_run), methods=["POST"]),
    Route(f"{PREFIX}/jobs/{{job_id}}", endpoint(_show), methods=["GET"]),
    Route(f"{PREFIX}/jobs/{{job_id}}/cancel", endpoint(_acting("cancel")), methods=["POST"]),
    Route(f"{PREFIX}/jobs/{{job_id}}/kill", endpoint(_acting("kill")), methods=["POST"]),
    Route(f"{PREFIX}/jobs/{{job_id}}/rerun", endpoint(_acting("rerun")), methods=["POST"]),
    Route(f"{PREFIX}/jobs/{{job_id}}/notify", endpoint(_notify), methods=["POST"]),
    Route(f"{PREFIX}/jobs/{{job_id}}/notes", endpoint(_note), methods=["POST"]),
    Route(f"{PREFIX}/schedules", endpoint(_schedules), methods=["GET"]),
    Route(f"{PREFIX}/schedules", endpoint(_schedule), methods=["POST"]),
    Route(f"{PREFIX}/schedules/{{name}}/{{op}}", endpoint(_schedule_change), methods=["POST"]),
]
