"""Sign-in and sign-out pages of the web view (the gate itself is :mod:`.gate`).

* ``GET /signin`` shows the form (the CSRF token like every form); ``POST /signin`` checks
  the throttle first (per user name and per client address, :class:`.gate.SignInThrottle`,
  the one the JSON API's login shares), then the password. Unknown user and wrong
  password get the same 401 and the same text; a throttled attempt gets 429 whatever
  the password.
* A successful sign-in always opens a NEW session (any session the browser came with is
  ended: no fixation) and sets the cookie ``HttpOnly``, ``SameSite=Lax`` (links from mail
  into a job still arrive signed in) and ``Secure`` when the request came over TLS; then
  it goes to ``next`` when that is a path of this site, else to the list.
* ``POST /signout`` ends the session on the server and clears the cookie.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from workspaces_jobs.identity.sessions import end_session, new_session
from workspaces_jobs.web import routes
from workspaces_jobs.web.gate import (
    SESSION_COOKIE,
    SIGNIN_PATH,
    config_of,
    safe_next,
    wait_text,
)

#: The one answer for an unknown user and a wrong password.
WRONG = "Wrong user name or password."


def _form_page(
    request: Request,
    *,
    status_code: int = 200,
    problem: str | None = None,
    name: str = "",
    target: str = "/",
) -> Response:
    return routes._page(
        request,
        "signin.html.j2",
        status_code=status_code,
        problem=problem,
        name=name,
        next=target,
        tz=None,
    )


async def signin_page(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    expired = request.query_params.get("expired") == "1"
    return _form_page(
        request,
        target=target,
        problem="Your session has ended: sign in again." if expired else None,
    )


def _one(form: dict[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[-1]


async def signin(request: Request) -> Response:
    try:
        form = await routes._checked_form(request)
    except routes.Refused:
        return routes._refused()
    config = config_of(request)
    name = _one(form, "name").strip()
    password = _one(form, "password")
    target = safe_next(_one(form, "next"))
    address = request.client.host if request.client else "-"
    user, wait = await config.throttle.sign_in(name, password, address)
    if wait:
        return _form_page(
            request,
            status_code=429,
            problem=f"Too many sign-in attempts: {wait_text(wait)}.",
            name=name,
            target=target,
        )
    if user is None:
        return _form_page(request, status_code=401, problem=WRONG, name=name, target=target)
    old = request.cookies.get(SESSION_COOKIE, "")
    sid = await run_in_threadpool(_renew, old, user.name, config.clock(), config.idle_seconds)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def _renew(old: str, name: str, now: float, idle: float) -> str:
    end_session(old)
    return new_session(name, now=now, idle_seconds=idle)


async def signout(request: Request) -> Response:
    try:
        await routes._checked_form(request)
    except routes.Refused:
        return routes._refused()
    await run_in_threadpool(end_session, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse(SIGNIN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


#: The routes of this module, added where the app assembles its routes.
ROUTES = [
    Route(SIGNIN_PATH, signin_page, methods=["GET"]),
    Route(SIGNIN_PATH, signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
]
