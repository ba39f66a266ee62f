"""The JSON API's saved filters and view settings (``wsjobs filters`` and ``wsjobs view``
through a login).

Both live in the server's history, written through the web view's own connection (one
writer per process). Roles, as in the web view: every signed-in user reads; operators save
filters and replace or delete their own, admins anyone's
(:func:`.routes.may_change_filter`); the view settings are shared, so only admins change
them. The actor is the token's user, source ``api`` (:func:`.api.endpoint`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from workspaces_jobs.errors import BadInput
from workspaces_jobs.web.api import PREFIX, _text, endpoint


def _db(request: Request) -> Any:
    return request.app.state.web.db()


def _filters(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.reporting.saved import list_filters

    require(user, "read")
    with _db(request) as con:
        return [f.to_json() for f in list_filters(con)]


def _filter_save(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.reporting.filters import FilterSpec
    from workspaces_jobs.reporting.saved import get_filter, save_filter
    from workspaces_jobs.web.routes import may_change_filter

    name, base = _text(body, "name"), _text(body, "base")
    raw = body.get("spec") or {}
    if not isinstance(raw, dict):
        raise BadInput("spec must be an object: the filter's fields as `wsjobs filters --json`")
    spec = FilterSpec.from_json(raw)
    with _db(request) as con:
        may_change_filter(user, con, name)
        if base:
            spec = get_filter(con, base).refined(spec)
        return save_filter(con, name, spec).to_json()


def _filter_delete(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.reporting.saved import delete_filter
    from workspaces_jobs.web.routes import may_change_filter

    name = request.path_params["name"]
    with _db(request) as con:
        may_change_filter(user, con, name)
        delete_filter(con, name)
    return {"name": name, "deleted": True}


def _view(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.reporting.saved import read_view

    require(user, "read")
    with _db(request) as con:
        return read_view(con).to_json()


def _view_set(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.reporting.saved import VIEW_KEYS, set_view

    require(user, "view_settings")
    changes = {k: v for k, v in body.items() if k in VIEW_KEYS}
    unknown = sorted(set(body) - set(VIEW_KEYS))
    if unknown:
        raise BadInput(f"unknown view setting(s) {', '.join(unknown)}")
    with _db(request) as con:
        return set_view(con, **changes).to_json()


def _view_reset(request: Request, user: Any, body: dict[str, Any]) -> Any:
    from workspaces_jobs.identity.roles import require
    from workspaces_jobs.reporting.saved import reset_view

    require(user, "view_settings")
    with _db(request) as con:
        return reset_view(con).to_json()


ROUTES = [
    Route(f"{PREFIX}/filters", endpoint(_filters), methods=["GET"]),
    Route(f"{PREFIX}/filters", endpoint(_filter_save), methods=["POST"]),
    Route(f"{PREFIX}/filters/{{name}}/delete", endpoint(_filter_delete), methods=["POST"]),
    Route(f"{PREFIX}/view", endpoint(_view), methods=["GET"]),
    Route(f"{PREFIX}/view", endpoint(_view_set), methods=["POST"]),
    Route(f"{PREFIX}/view/reset", endpoint(_view_reset), methods=["POST"]),
]
