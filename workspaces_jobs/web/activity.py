"""The job detail's Activity tab (who did what to the job, and its notes) and the note form.

Rows come from the history's ``activity`` and ``notes`` tables (:mod:`workspaces_jobs.activity`),
read through the web view's own history connection. The note form is a POST with the
same CSRF token as every other form; its author is the signed-in user
(``request.state.user`` when sign-in is on, checked with the role table: operators and
admins), else the server's OS user as for every other web action today.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from workspaces_jobs import activity
from workspaces_jobs.errors import Forbidden, WsJobsError, user_message
from workspaces_jobs.web.security import csrf_ok
from workspaces_jobs.web.state import WebState

#: A note is at most 4,000 characters; the form (token, escaping) stays well under this.
MAX_FORM_BYTES = 64 * 1024


def context(state: WebState, job_id: str) -> dict[str, Any]:
    """``activity`` and ``notes`` of a job for the detail template (empty if unreadable)."""
    try:
        with state.db() as con:
            return {
                "activity": activity.job_activity(job_id, con=con),
                "notes": activity.job_notes(job_id, con=con),
            }
    except Exception:  # a history older than migration 007 is migrated on the next sync
        return {"activity": [], "notes": []}


def _author(request: Request) -> str:
    """The signed-in user (roles checked) or, without sign-in, the server's OS user."""
    user = getattr(request.state, "user", None)
    if user is None:
        return activity.local_user()
    from workspaces_jobs.identity.roles import require

    require(user, "note")
    return str(user.name)


async def _form(request: Request) -> dict[str, list[str]] | None:
    """The form, if it carries the page's CSRF token and is of a sane size."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    state: WebState = request.app.state.web
    return form if csrf_ok(state.csrf_token, form, request.cookies, request.headers) else None


async def add_note(request: Request) -> Response:
    form = await _form(request)
    if form is None:
        return PlainTextResponse(
            "403 Forbidden: missing or wrong form token. Reload the page and try again.",
            status_code=403,
        )
    state: WebState = request.app.state.web
    job_id = request.path_params["job_id"]
    text = (form.get("text") or [""])[-1]
    try:
        author = _author(request)
        await run_in_threadpool(
            activity.add_note, job_id, author, text, source="web", history=state.path
        )
    except Forbidden as exc:  # a viewer's forged POST: refused, nothing recorded
        return PlainTextResponse(f"403 Forbidden: {user_message(exc)}", status_code=403)
    except WsJobsError as exc:
        key = state.flashes.add("error", user_message(exc))
    else:
        key = state.flashes.add("ok", f"Note added by {author}.")
    return RedirectResponse(f"/jobs/{job_id}?tab=activity&flash={key}", status_code=303)


ROUTES = [Route("/jobs/{job_id}/notes", add_note, methods=["POST"])]
