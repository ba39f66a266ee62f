"""The web jobs view (``wsjobs ui``): the product's Jobs list and detail screens, served locally.

A small Starlette app over the same code as the CLI: the list is a
:class:`~workspaces_jobs.reporting.query.JobQuery` (filters, saved filters, view settings,
exports), actions go through :mod:`workspaces_jobs.lifecycle` and
:mod:`workspaces_jobs.notify`, and the detail view reads the job live with
:func:`workspaces_jobs.jobs.read_job` (falling back to the history copy). Server-rendered
Jinja2 templates, autoescaped; no front-end build step.

Modules: :mod:`.app` (the app and its lifespan), :mod:`.routes` (the pages and actions),
:mod:`.state` (the history connection the server owns and the background sync),
:mod:`.listing` (list request ⇄ query parameters, paging; pure), :mod:`.detail` (one job,
its logs grouped per device and step), :mod:`.security` (CSRF token, headers, hosts),
:mod:`.render` (the template environment and filters).
"""

from __future__ import annotations

from workspaces_jobs.web.app import create_app

__all__ = ["create_app"]
