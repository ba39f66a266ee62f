"""The operator's console on the detail page: live logs, the full log, kill, rerun.

* ``GET /jobs/{id}/events`` — server-sent events: new log lines as they reach the API
  (``line`` events, their HTML already escaped and coloured), the job's status and
  progress (``status``), and ``end`` once the job is final and its closing line has
  arrived. The page's script appends the lines; nothing reloads. Lines are read with the
  same call as ``wsjobs logs --follow`` (a short overlap, de-duplicated by id).
* ``GET /jobs/{id}/log.txt`` — every line, as ``wsjobs logs`` prints it (terminal-safe).
* ``POST /jobs/kill`` and ``POST /jobs/rerun`` (all devices or failed only) go through
  :mod:`workspaces_jobs.lifecycle`. Each first answers with a confirmation page; only
  the confirmed form (``confirm=yes``, with the CSRF token like every POST) acts.

Messages from the lifecycle code speak CLI (``wsjobs kill``, ``--now``):
:func:`~.detail.web_words` turns them into the names of the page's buttons.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from workspaces_jobs.errors import user_message
from workspaces_jobs.gateway import canonical
from workspaces_jobs.jobfacts import LogFact
from workspaces_jobs.logview import ansi_html, select_lines
from workspaces_jobs.status import JobStatus
from workspaces_jobs.web import detail as detail_mod
from workspaces_jobs.web.detail import eta_text, is_error, web_words

#: Seconds between two reads of new lines while a page follows a job.
POLL = 1.0
#: Re-read this far behind the newest line (lines can arrive slightly out of order).
OVERLAP = timedelta(seconds=3)
#: Seconds to wait for a final job's last lines when its closing line does not come.
FINAL_GRACE = 4.0
#: Recompute the estimate every this many polls (it reads the job's steps and the history).
ETA_EVERY = 5
#: A stream ends after this long; the browser's EventSource reconnects by itself.
MAX_STREAM = 600.0


def _closing(line: LogFact) -> bool:
    return line.step_id is None and line.message.startswith("Finished in state")


def line_event(line: LogFact, tz: Any) -> dict[str, Any]:
    """What the page needs to append one line (the HTML escaped and coloured here)."""
    return {
        "id": line.id,
        "device": line.device or "",
        "step": line.step or ("job" if line.device is None else "-"),
        "level": line.level,
        "stream": line.stream or "",
        "ts": line.ts.isoformat(),
        "time": line.ts.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        "html": str(ansi_html(line.message)),
        "error": is_error(line),
    }


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def job_events(request: Request) -> Response:
    """Server-sent events of one job: new lines, status, end."""
    from workspaces_jobs.jobs import job_state, read_logs
    from workspaces_jobs.reporting import windows
    from workspaces_jobs.reporting.saved import read_view

    job_id = canonical(request.path_params["job_id"])
    if job_id is None:
        return PlainTextResponse("not a job id", status_code=404)
    params = request.query_params
    after_text = params.get("after") or ""
    try:
        after = datetime.fromisoformat(after_text) if after_text else None
    except ValueError:
        return PlainTextResponse("bad 'after': use an ISO 8601 time", status_code=400)
    devices = [v for v in params.getlist("device") if v]
    steps = [v for v in params.getlist("step") if v]
    levels = [v for v in params.getlist("level") if v]
    state = request.app.state.web

    def zone() -> Any:
        with state.db() as con:
            return windows.resolve_zone(read_view(con).tz)

    tz = await run_in_threadpool(zone)

    async def stream() -> AsyncIterator[str]:
        seen: set[str] = set()
        last = after
        final_at: float | None = None
        closed = False
        started = time.monotonic()
        polls = 0
        eta: str | None = None
        yield "retry: 2000\n\n"
        while time.monotonic() - started < MAX_STREAM:
            if await request.is_disconnected():
                return
            try:
                status, progress, _ = await run_in_threadpool(job_state, job_id)
                since = last - OVERLAP if last else None
                lines = await run_in_threadpool(read_logs, job_id, after=since)
            except Exception as exc:  # API down: say so, the browser retries
                yield _sse("problem", {"message": user_message(exc)})
                return
            fresh = [line for line in lines if line.id not in seen]
            seen.update(line.id for line in fresh)
            if fresh:
                last = max([last, *(line.ts for line in fresh)] if last else [x.ts for x in fresh])
                closed = closed or any(_closing(line) for line in fresh)
                picked = select_lines(fresh, devices=devices, steps=steps, levels=levels)
                for line in picked:
                    yield _sse("line", line_event(line, tz))
            polls += 1
            if polls % ETA_EVERY == 1 and not status.is_final:
                eta = await run_in_threadpool(eta_text, state, job_id)
            elif status.is_final:
                eta = None
            yield _sse(
                "status",
                {
                    "status": status.value,
                    "slug": status.slug,
                    "progress": progress,
                    "eta": eta,
                },
            )
            if status.is_final and final_at is None:
                final_at = time.monotonic()
            if final_at is not None and (
                (closed and not fresh) or time.monotonic() - final_at > FINAL_GRACE
            ):
                yield _sse("end", {"status": status.value})
                return
            await asyncio.sleep(POLL)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def job_log_text(request: Request) -> Response:
    """The whole log as text, as ``wsjobs logs`` prints it."""
    from workspaces_jobs.cli.logs import format_line

    job_id = canonical(request.path_params["job_id"])
    if job_id is None:
        return PlainTextResponse("not a job id", status_code=404)
    found = await run_in_threadpool(detail_mod.load_job, job_id, request.app.state.web.db)
    if found is None:
        return PlainTextResponse(f"no job {job_id}", status_code=404)
    lines = sorted(found.job.logs, key=lambda line: line.ts)
    body = "".join(format_line(line) + "\n" for line in lines)
    return PlainTextResponse(
        body,
        headers={"Content-Disposition": f'attachment; filename="job-{job_id[:8]}.log"'},
    )


# --- kill / rerun (POST, confirmed) ------------------------------------------------------


def _kill(job_id: str, by: str) -> tuple[str, str]:
    from workspaces_jobs.lifecycle import kill_job

    try:
        result = kill_job(job_id, by=by)
    except (ValueError, LookupError) as exc:
        return "error", web_words(user_message(exc))
    if result.status == JobStatus.CANCELED.value:
        return "ok", f"Killed: the job's steps were stopped; it is {result.status}."
    return "ok", "Kill requested: the job's process is stopping its steps."


def _rerun(job_id: str, failed_only: bool, owner: str) -> tuple[str, str, str | None]:
    from workspaces_jobs.lifecycle import rerun_job

    try:
        result = rerun_job(job_id, failed_only=failed_only, owner=owner)
    except (ValueError, LookupError) as exc:
        return "error", web_words(user_message(exc)), None
    which = "its failed devices" if failed_only else "all its devices"
    return "ok", f"Rerun started on {which} ({', '.join(result.target)}).", result.job_id


async def _confirm_or_act(request: Request, kind: str) -> Response:
    from starlette.responses import RedirectResponse

    from workspaces_jobs.web.routes import (
        Refused,
        _checked_form,
        _page,
        _refused,
        check_jobs,
        me,
    )

    try:
        form = await _checked_form(request)
    except Refused:
        return _refused()
    state = request.app.state.web
    ids = [i for i in (canonical(j) for j in form.get("job", [])) if i]
    if len(ids) != 1:
        key = state.flashes.add("error", "Open one job's page to kill or rerun it.")
        return RedirectResponse(f"/?flash={key}", status_code=303)
    job_id = ids[0]
    # Refused before the confirmation too: a viewer never gets a "Yes, kill it" page.
    if refused := await check_jobs(request, "kill" if kind == "kill" else "rerun", ids):
        return refused
    by = me(request).name
    failed_only = (form.get("failed_only") or [""])[-1] == "1"
    if (form.get("confirm") or [""])[-1] != "yes":
        if kind == "kill":
            question = (
                f"Kill job {job_id[:8]}? Its running steps are stopped on every device and "
                "it ends Canceled by the user."
            )
            button = "Yes, kill it"
        else:
            which = "only its failed devices" if failed_only else "all its devices"
            question = f"Rerun job {job_id[:8]} on {which}? A new job starts now."
            button = "Yes, rerun"
        return _page(
            request,
            "confirm.html.j2",
            tz=None,
            question=question,
            button=button,
            action=f"/jobs/{kind}",
            job_id=job_id,
            failed_only=failed_only,
        )
    if kind == "kill":
        flash_kind, text = await run_in_threadpool(_kill, job_id, by)
        target = job_id
    else:
        flash_kind, text, new_id = await run_in_threadpool(_rerun, job_id, failed_only, by)
        target = new_id or job_id
    key = state.flashes.add(flash_kind, text)
    return RedirectResponse(f"/jobs/{target}?flash={key}", status_code=303)


async def kill(request: Request) -> Response:
    return await _confirm_or_act(request, "kill")


async def rerun(request: Request) -> Response:
    return await _confirm_or_act(request, "rerun")


def routes() -> list[Any]:
    """The console's routes (registered with one line in :mod:`.app`)."""
    from starlette.routing import Route

    return [
        Route("/jobs/kill", kill, methods=["POST"]),
        Route("/jobs/rerun", rerun, methods=["POST"]),
        Route("/jobs/{job_id}/events", job_events, methods=["GET"]),
        Route("/jobs/{job_id}/log.txt", job_log_text, methods=["GET"]),
    ]
