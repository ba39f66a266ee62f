"""The pages and actions of the web jobs view.

GET pages only read; everything that changes something is a POST checked by
:func:`.security.csrf_ok` (403 and no change otherwise) and answered with a redirect to
a GET page (post/redirect/get) carrying a one-shot flash message. Redirect targets are
rebuilt from the list's own parameters, never taken from the request, so they cannot
point elsewhere. Blocking work (DuckDB, the Prefect client) runs in the thread pool.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from workspaces_jobs import clock
from workspaces_jobs.errors import Forbidden, user_message
from workspaces_jobs.gateway import canonical, resolve_job_id
from workspaces_jobs.identity import User, require
from workspaces_jobs.identity.roles import Action
from workspaces_jobs.ids import MIN_PREFIX, short_len
from workspaces_jobs.reporting import reader, windows
from workspaces_jobs.reporting.fields import COLUMNS, FILTER_FIELDS
from workspaces_jobs.reporting.filters import DEFAULT_SORT, FilterSpec
from workspaces_jobs.reporting.query import JobQuery, page_rows
from workspaces_jobs.reporting.saved import (
    delete_filter,
    get_filter,
    list_filters,
    read_view,
    reset_view,
    save_filter,
)
from workspaces_jobs.reporting.saved import filter_owner as saved_filter_owner
from workspaces_jobs.status import JobStatus
from workspaces_jobs.web import activity as activity_tab
from workspaces_jobs.web import detail as detail_mod
from workspaces_jobs.web.detail import web_words
from workspaces_jobs.web.gate import can, user_of
from workspaces_jobs.web.listing import AGES, ListRequest, Page, page_size
from workspaces_jobs.web.render import render
from workspaces_jobs.web.security import CSRF_COOKIE, CSRF_FIELD, csrf_ok
from workspaces_jobs.web.state import WebState

#: The "Export to" picker: format → (label, media type).
EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    "csv": ("CSV", "text/csv"),
    "xlsx": (
        "Excel (xlsx)",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    "json": ("JSON", "application/json"),
    "parquet": ("Parquet", "application/vnd.apache.parquet"),
    "html": ("HTML report", "text/html"),
}
#: Largest form body accepted (a few hundred job ids and a filter fit easily).
MAX_FORM_BYTES = 256 * 1024
#: Seconds between reloads of a page showing jobs that are not final yet.
AUTO_REFRESH = 5

STATUSES = [(s.value, s.slug) for s in JobStatus]
TABS = ("logs", "workspaces", "activity")


def _state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    state = _state(request)
    sync = state.syncer.status
    context.setdefault("flash", None)
    context.setdefault("refresh", None)
    html = render(
        template,
        csrf_field=CSRF_FIELD,
        csrf_token=state.csrf_token,
        sync=sync,
        history=str(state.path),
        now=clock.now(),
        user=user_of(request),
        can=lambda action, owner=None: can(request, action, owner),
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    response.set_cookie(CSRF_COOKIE, state.csrf_token, httponly=True, samesite="strict", path="/")
    return response


def _error(request: Request, message: str, status_code: int) -> Response:
    return _page(request, "error.html.j2", status_code=status_code, message=message, tz=None)


def me(request: Request) -> User:
    """The signed-in user; every route but the open ones runs behind the gate."""
    user = user_of(request)
    if user is None:  # pragma: no cover - the gate sends these to sign in
        raise Forbidden("sign in first")
    return user


def forbidden(request: Request, exc: Forbidden) -> Response:
    """403 with the role table's one line (who may); nothing was changed."""
    return _error(request, f"403 Forbidden: {user_message(exc)}", 403)


def job_owners(ids: list[str]) -> dict[str, str | None]:
    """Owner of each job, read from the Prefect API (the history may not have it yet);
    ``None`` for an unknown id (the action itself then reports it, one line)."""
    from workspaces_jobs.lifecycle import job_owner

    owners: dict[str, str | None] = {}
    for job_id in ids:
        try:
            owners[job_id] = job_owner(job_id)
        except (ValueError, LookupError):
            owners[job_id] = None
    return owners


#: Actions on a job that an operator may do to its own jobs only (the role table decides).
JOB_OWNED: frozenset[str] = frozenset({"cancel", "kill", "rerun", "notify"})


async def check_jobs(request: Request, action: Action, ids: list[str]) -> Response | None:
    """403 unless the user may ``action`` every one of ``ids`` (none is touched otherwise)."""
    user = me(request)
    try:
        require(user, action, owner=user.name)  # the role may never do it: no API call
        if user.role != "admin" and action in JOB_OWNED:
            owners = await run_in_threadpool(job_owners, ids)
            for owner in owners.values():
                if owner is not None:
                    require(user, action, owner=owner)
    except Forbidden as exc:
        return forbidden(request, exc)
    return None


async def check_subscription(
    request: Request, ids: list[str], emails: list[str], *, now: bool = False
) -> Response | None:
    """403 unless the user may subscribe ``emails`` to every one of ``ids`` (the role
    table's :func:`~workspaces_jobs.identity.roles.require_subscription`)."""
    from workspaces_jobs.identity import require_subscription

    user = me(request)
    try:
        require_subscription(user, emails=emails, job_owner="", now=now)  # on anyone's job
    except Forbidden:
        pass  # not on just any job: each job's owner decides below
    else:
        return None
    owners = await run_in_threadpool(job_owners, ids)
    try:
        for owner in owners.values():
            require_subscription(user, emails=emails, job_owner=owner or "", now=now)
    except Forbidden as exc:
        return forbidden(request, exc)
    return None


def signed_in_name() -> str:
    """``@me`` of a filter in the web view (``canceled-by-me``, ``my-jobs-today``): the
    signed-in user the gate made this request's actor, never the server's OS user."""
    from workspaces_jobs import activity

    return activity.context_who() or activity.local_user()


# --- the list ---------------------------------------------------------------------------


def list_context(state: WebState, req: ListRequest) -> dict[str, Any]:
    """Everything the list page shows, read in one go under the connection lock."""
    with state.snapshot() as con:
        view = read_view(con)
        tz = windows.resolve_zone(view.tz)
        filters = list_filters(con)
        ctx: dict[str, Any] = {
            "req": req,
            "tz": tz,
            "filters": filters,
            "ages": AGES,
            "statuses": STATUSES,
            "formats": EXPORT_FORMATS,
            "problems": list(req.problems),
            "rows": [],
            "columns": [],
            "counts": {},
            "page": Page(1, page_size(view.limit), 0),
            "description": "",
            "age": req.get("age") or view.age,
            "sort": view.sort,
            "desc": view.desc,
            "refresh": None,
            "id_len": MIN_PREFIX,
            "fields": FILTER_FIELDS,
            "all_columns": list(COLUMNS.items()),
            "shown_columns": (),
            "choices": reader.choices(con),
            "panel_open": any(
                req.get(f.name) not in (None, ())
                for f in FILTER_FIELDS
                if f.web not in ("age", "chips", "search")
            ),
        }
        try:
            query = JobQuery(req.filter, con=con, user=signed_in_name, **req.fields())
            plan = query.plan(con)
            all_statuses = JobQuery(
                req.filter, con=con, user=signed_in_name, **req.with_values(statuses=()).fields()
            )
            counts = reader.status_counts(con, all_statuses.plan(con))
        except (ValueError, LookupError) as exc:
            ctx["problems"].append(user_message(exc))
            return ctx
        size = page_size(plan.limit)
        # Without status chips both queries match the same rows: one scan, not two.
        total = sum(counts.values()) if not req.statuses else reader.count(con, plan)
        page = Page(req.page, size, total)
        if page.number > page.pages:
            page = Page(page.pages, size, total)
        # No OFFSET in the query object: fetch the rows up to this page, keep its slice
        # (pages are 50 rows and MAX_PAGE bounds the cost).
        rows = page_rows(con, replace(plan, limit=page.number * size))[page.offset :]
        spec = plan.spec
        ctx.update(
            rows=rows,
            columns=[(c, plan.allowed[c]) for c in plan.columns],
            shown_columns=plan.columns,
            counts=counts,
            page=page,
            description=plan.description,
            age=spec.age or (None if (spec.since or spec.until) else view.age),
            sort=spec.sort or DEFAULT_SORT,
            desc=spec.desc if spec.desc is not None else True,
            id_len=short_len(str(r["id"]) for r in rows),
            # Only a job In progress changes by itself soon; Pending ones may wait for days.
            refresh=AUTO_REFRESH
            if any(r.get("status") == JobStatus.IN_PROGRESS for r in rows)
            else None,
        )
    return ctx


async def jobs_list(request: Request) -> Response:
    req = ListRequest.from_params(_multi(request.query_params.multi_items()))
    ctx = await run_in_threadpool(_state(request).retried, list_context, req)
    flash = _state(request).flashes.pop(request.query_params.get("flash"))
    return _page(
        request,
        "list.html.j2",
        status_code=400 if ctx["problems"] else 200,
        flash=flash,
        **ctx,
    )


def _multi(items: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in items:
        out.setdefault(key, []).append(value)
    return out


# --- export ----------------------------------------------------------------------------


def _export(state: WebState, req: ListRequest, fmt: str) -> tuple[Path, str]:
    folder = Path(tempfile.mkdtemp(prefix="wsjobs-export-"))
    name = f"jobs-{clock.now().strftime('%Y%m%d-%H%M%S')}.{fmt}"
    try:
        with state.db() as con:
            query = JobQuery(req.filter, con=con, user=signed_in_name, **req.fields())
            query.export(fmt, folder / name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, name


async def export(request: Request) -> Response:
    params = _multi(request.query_params.multi_items())
    fmt = (params.get("format") or [""])[-1].strip().lower()
    if fmt not in EXPORT_FORMATS:
        return _error(
            request, f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}", 400
        )
    req = ListRequest.from_params(params)
    if req.problems:
        return _error(request, "; ".join(req.problems), 400)
    try:
        folder, name = await run_in_threadpool(_export, _state(request), req, fmt)
    except (ValueError, LookupError) as exc:
        return _error(request, user_message(exc), 400)
    return FileResponse(
        folder / name,
        media_type=EXPORT_FORMATS[fmt][1],
        filename=name,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )


# --- detail ----------------------------------------------------------------------------


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def detail_context(
    state: WebState, job_id: str, picks: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The detail page: the job, its logs (filtered by device/step/level), its actions."""
    from workspaces_jobs.jobs import job_link
    from workspaces_jobs.logview import select_lines
    from workspaces_jobs.web.detail import eta_text, is_error

    found = detail_mod.load_job(job_id, state.snapshot)
    if found is None:
        return None
    with state.snapshot() as con:
        tz = windows.resolve_zone(read_view(con).tz)
    job = found.job
    status = JobStatus(job.status) if job.status in JobStatus._value2member_map_ else None
    picks = {k: v for k, v in (picks or {}).items() if v}
    all_lines = job.logs
    job.logs = select_lines(
        all_lines,
        devices=[picks["device"]] if "device" in picks else [],
        steps=[picks["step"]] if "step" in picks else [],
        levels=[picks["level"]] if "level" in picks else [],
    )
    groups = detail_mod.group_logs(job)
    shown = [line for g in groups for s in g.steps for line in s.lines]
    first_error = next(
        (line.id for line in sorted(shown, key=lambda x: x.ts) if is_error(line)), None
    )
    live = status in (JobStatus.PENDING, JobStatus.IN_PROGRESS)
    after = max((line.ts for line in all_lines), default=None)
    job.logs = all_lines
    return {
        "d": found,
        "job": job,
        "tz": tz,
        "groups": groups,
        "link": job_link(job.id),
        "can_cancel": status == JobStatus.PENDING,
        "can_notify": status in (JobStatus.PENDING, JobStatus.IN_PROGRESS),
        "can_kill": status == JobStatus.IN_PROGRESS,
        "can_rerun": status is not None and status.is_final,
        "can_rerun_failed": status is not None
        and status.is_final
        and any(dv.status != JobStatus.COMPLETED.value for dv in job.devices),
        "can_notify_now": status is not None and status.is_final,
        "picks": picks,
        "pick_devices": sorted({ln.device for ln in all_lines if ln.device}),
        "pick_steps": sorted({ln.step for ln in all_lines if ln.step and ln.device}),
        "levels": LEVELS,
        "first_error": first_error,
        "live": live,
        "after": after,
        "eta": eta_text(state, job.id) if status == JobStatus.IN_PROGRESS else None,
        "refresh": None,  # live pages follow the job through /jobs/ID/events instead
        **activity_tab.context(state, job.id),
    }


async def job_detail(request: Request) -> Response:
    raw = request.path_params["job_id"]
    job_id = canonical(raw)
    if job_id is None:
        try:
            full = await run_in_threadpool(resolve_job_id, raw, con_factory=_state(request).db)
        except (ValueError, LookupError) as exc:
            return _error(request, user_message(exc), 404)
        return RedirectResponse(f"/jobs/{full}", status_code=303)
    tab = request.query_params.get("tab", "logs")
    if tab not in TABS:
        tab = "logs"
    picks = {k: request.query_params.get(k, "") for k in ("device", "step", "level")}
    ctx = await run_in_threadpool(_state(request).retried, detail_context, job_id, picks)
    if ctx is None:
        return _error(
            request, f"no job {job_id}: neither the Prefect API nor the history has it", 404
        )
    flash = _state(request).flashes.pop(request.query_params.get("flash"))
    return _page(request, "detail.html.j2", tab=tab, flash=flash, **ctx)


# --- actions (POST) ----------------------------------------------------------------------


async def _form(request: Request) -> dict[str, list[str]] | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)


class Refused(Forbidden):
    """A POST without a valid CSRF token (or an oversized form)."""


async def _checked_form(request: Request) -> dict[str, list[str]]:
    form = await _form(request)
    if form is None or not csrf_ok(
        _state(request).csrf_token, form, request.cookies, request.headers
    ):
        raise Refused
    return form


def _refused() -> Response:
    return PlainTextResponse(
        "403 Forbidden: missing or wrong form token. Reload the page and try again.",
        status_code=403,
    )


def _back(state: WebState, form: dict[str, list[str]], kind: str, text: str) -> Response:
    """Redirect to the page the form came from: a job's detail page or the list."""
    key = state.flashes.add(kind, text)
    if (form.get("return_to") or [""])[-1] == "detail":
        ids = [i for i in (canonical(j) for j in form.get("job", [])) if i]
        if len(ids) == 1:
            return RedirectResponse(f"/jobs/{ids[0]}?flash={key}", status_code=303)
    url = ListRequest.from_params(form).url(page=ListRequest.from_params(form).page)
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}flash={key}", status_code=303)


def _selected(form: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    bad: list[str] = []
    for raw in form.get("job", []):
        job_id = canonical(raw)
        (ids if job_id else bad).append(job_id or raw)
    return list(dict.fromkeys(ids)), bad


def _summary(verb: str, done: list[str], errors: list[str]) -> tuple[str, str]:
    parts = []
    if done:
        parts.append(f"{verb} {len(done)} job{'s' if len(done) != 1 else ''}: {', '.join(done)}")
    parts.extend(errors)
    return ("error" if errors else "ok"), ". ".join(parts)


def _cancel(state: WebState, ids: list[str], by: str) -> tuple[list[str], list[str]]:
    from workspaces_jobs.gateway import JobNotFound
    from workspaces_jobs.lifecycle import LifecycleError, cancel_job

    done, errors = [], []
    for job_id in ids:
        try:
            result = cancel_job(job_id, by=by)
        except (LifecycleError, JobNotFound) as exc:
            errors.append(web_words(user_message(exc)))
        else:
            done.append(f"{job_id[:8]} ({result.status})")
    if done:
        state.syncer.run_once()  # the list shows the new status at once
    return done, errors


async def cancel(request: Request) -> Response:
    try:
        form = await _checked_form(request)
    except Refused:
        return _refused()
    state = _state(request)
    ids, bad = _selected(form)
    if not ids:
        return _back(state, form, "error", "Select at least one Pending job to cancel.")
    if refused := await check_jobs(request, "cancel", ids):
        return refused
    done, errors = await run_in_threadpool(_cancel, state, ids, me(request).name)
    errors += [f"{b!r} is not a job id" for b in bad]
    return _back(state, form, *_summary("Canceled", done, errors))


def _notify(
    state: WebState, ids: list[str], email: str, by: str, now: bool = False
) -> tuple[list[str], list[str]]:
    from workspaces_jobs.gateway import JobNotFound
    from workspaces_jobs.notify.signup import subscribe

    done, errors = [], []
    for job_id in ids:
        try:
            subscribe(job_id, [email], by=by, now=now)
        except (ValueError, JobNotFound) as exc:
            errors.append(web_words(user_message(exc)))
        else:
            done.append(job_id[:8])
    return done, errors


async def notify(request: Request) -> Response:
    try:
        form = await _checked_form(request)
    except Refused:
        return _refused()
    state = _state(request)
    ids, bad = _selected(form)
    email = (form.get("email") or [""])[-1].strip()
    if not ids:
        return _back(state, form, "error", "Select at least one Pending or In progress job.")
    if not email:
        return _back(state, form, "error", "Type the email address to notify, then Notify.")
    now = (form.get("now") or [""])[-1] == "1"
    # Everyone subscribes their own address; any other, or a summary now, acts for the owner.
    if refused := await check_subscription(request, ids, [email], now=now):
        return refused
    done, errors = await run_in_threadpool(_notify, state, ids, email, me(request).name, now)
    errors += [f"{b!r} is not a job id" for b in bad]
    verb = (
        f"The summary was emailed to {email} —"
        if now
        else f"{email} will be emailed when these end —"
    )
    return _back(state, form, *_summary(verb, done, errors))


async def refresh(request: Request) -> Response:
    try:
        form = await _checked_form(request)
    except Refused:
        return _refused()
    state = _state(request)
    status = await run_in_threadpool(state.syncer.run_once)
    if status.ok:
        text = f"Synced: {status.added} job(s) added, {status.updated} updated."
        return _back(state, form, "ok", text)
    return _back(state, form, "error", f"Sync failed: {status.error}")


async def view_reset(request: Request) -> Response:
    try:
        await _checked_form(request)
    except Refused:
        return _refused()
    try:
        require(me(request), "view_settings")
    except Forbidden as exc:
        return forbidden(request, exc)
    state = _state(request)

    def work() -> None:
        with state.db() as con:
            reset_view(con)

    await run_in_threadpool(work)
    key = state.flashes.add("ok", "View settings reset: Today, newest first, default columns.")
    return RedirectResponse(f"/?flash={key}", status_code=303)


def _save(state: WebState, name: str, req: ListRequest) -> str:
    with state.db() as con:
        base = get_filter(con, req.filter) if req.filter else FilterSpec()
        spec = base.refined(req.spec())
        if spec.age is None and not (spec.since or spec.until):
            spec = replace(spec, age=read_view(con).age)  # save what the user sees
        return save_filter(con, name, spec).description


def may_change_filter(user: User, con: Any, name: str) -> None:
    """Operators save new filters and replace or delete their own; admins anyone's; a
    filter saved before owners were recorded is an admin's to change (Forbidden, else
    nothing)."""
    require(user, "filters")
    exists, owner = saved_filter_owner(con, name) if name else (False, None)
    if exists:
        require(user, "filters", owner=owner or "")


async def check_filter(request: Request, name: str) -> Response | None:
    """403 unless the user may save (or replace) or delete the saved filter ``name``."""
    state, user = _state(request), me(request)

    def work() -> None:
        with state.db() as con:
            may_change_filter(user, con, name)

    try:
        await run_in_threadpool(work)
    except Forbidden as exc:
        return forbidden(request, exc)
    return None


async def filter_save(request: Request) -> Response:
    try:
        form = await _checked_form(request)
    except Refused:
        return _refused()
    state = _state(request)
    name = (form.get("name") or [""])[-1].strip()
    if refused := await check_filter(request, name):
        return refused
    req = ListRequest.from_params(form)
    try:
        described = await run_in_threadpool(_save, state, name, req)
    except (ValueError, LookupError) as exc:
        return _back(state, form, "error", user_message(exc))
    key = state.flashes.add("ok", f"Saved filter {name!r}: {described}.")
    return RedirectResponse(f"{ListRequest(filter=name).url()}&flash={key}", status_code=303)


async def filter_delete(request: Request) -> Response:
    try:
        form = await _checked_form(request)
    except Refused:
        return _refused()
    state = _state(request)
    name = (form.get("name") or [""])[-1].strip()
    if refused := await check_filter(request, name):
        return refused

    def work() -> None:
        with state.db() as con:
            delete_filter(con, name)

    try:
        await run_in_threadpool(work)
    except (ValueError, LookupError) as exc:
        return _back(state, form, "error", user_message(exc))
    key = state.flashes.add("ok", f"Deleted filter {name!r}.")
    return RedirectResponse(f"/?flash={key}", status_code=303)


async def health(request: Request) -> Response:
    sync = _state(request).syncer.status
    return JSONResponse(
        {
            "ok": True,
            "last_sync": sync.at.isoformat() if sync.at else None,
            "sync_ok": sync.ok,
            "sync_error": sync.error,
        }
    )
