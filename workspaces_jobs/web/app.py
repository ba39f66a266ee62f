"""The Starlette application of ``wsjobs ui``.

``create_app(state)`` wires the routes of :mod:`.routes` to a :class:`.state.WebState`
that the caller opened (so ``wsjobs ui`` can report a locked history file as one line
before any server starts). The app's lifespan starts the background sync and, on
shutdown, stops it and closes the history file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from workspaces_jobs import activity
from workspaces_jobs.web import activity as activity_tab
from workspaces_jobs.web import api, apilist, apinotify, auth, console, routes, rules, scheduling
from workspaces_jobs.web.gate import AuthConfig, SessionGate
from workspaces_jobs.web.security import WILDCARD_BINDS, HostGuard, SecurityHeaders, allowed_hosts
from workspaces_jobs.web.state import WebState


def create_app(
    state: WebState,
    *,
    host: str = "127.0.0.1",
    extra_hosts: Iterable[str] = (),
    auth_config: AuthConfig | None = None,
) -> Starlette:
    """The app; ``auth_config`` (sessions, proxy, throttle, clock) defaults to the settings."""
    config = auth_config or AuthConfig.from_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.syncer.start()
        try:
            yield
        finally:
            state.close()

    app = Starlette(
        routes=[
            *auth.ROUTES,
            *console.routes(),
            Route("/", routes.jobs_list, methods=["GET"]),
            Route("/jobs/cancel", routes.cancel, methods=["POST"]),
            Route("/jobs/notify", routes.notify, methods=["POST"]),
            Route("/jobs/{job_id}", routes.job_detail, methods=["GET"]),
            Route("/export", routes.export, methods=["GET"]),
            Route("/refresh", routes.refresh, methods=["POST"]),
            Route("/view/reset", routes.view_reset, methods=["POST"]),
            Route("/filters/save", routes.filter_save, methods=["POST"]),
            Route("/filters/delete", routes.filter_delete, methods=["POST"]),
            Route("/healthz", routes.health, methods=["GET"]),
            *rules.ROUTES,
            *scheduling.ROUTES,
            *api.ROUTES,
            *apinotify.ROUTES,
            *apilist.ROUTES,
            *activity_tab.ROUTES,
            Mount(
                "/static",
                StaticFiles(packages=[("workspaces_jobs.web", "static")]),
                name="static",
            ),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                HostGuard,
                allowed=allowed_hosts(host, extra_hosts),
                own_address=host in WILDCARD_BINDS,
            ),
            Middleware(SessionGate, config=config),
        ],
        lifespan=lifespan,
    )
    app.state.web = state
    # actions done here are recorded where it reads, through its own connection
    activity.use_history(state.path, state.db)
    return app
