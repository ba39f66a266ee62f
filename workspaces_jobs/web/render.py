"""The template environment: packaged ``templates/*.html.j2``, always autoescaped.

``autoescape=True`` (not ``select_autoescape``, which looks at the extension and would
not escape ``.html.j2``): every value a template prints is HTML-escaped unless a
template says otherwise, and none does. ``StrictUndefined`` turns a typo in a template
into an error in the tests instead of an empty cell.
"""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined, TemplateNotFound

from workspaces_jobs.logview import ansi_html
from workspaces_jobs.web.listing import status_slug


class PackageLoader(BaseLoader):
    """Templates from the installed package (``importlib.resources``, zip-safe)."""

    def get_source(self, environment: Environment, template: str) -> tuple[str, None, Any]:
        path = resources.files("workspaces_jobs.web").joinpath("templates", template)
        if not path.is_file():
            raise TemplateNotFound(template)
        return path.read_text(encoding="utf-8"), None, lambda: True


def fmt_time(value: Any, tz: tzinfo | None = None) -> str:
    """A local wall-clock time (``YYYY-MM-DD HH:MM:SS``), ``-`` when unset."""
    if not isinstance(value, datetime):
        return "-" if value is None else str(value)
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def fmt_iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else ""


def fmt_duration(start: Any, end: Any) -> str:
    if not (isinstance(start, datetime) and isinstance(end, datetime)):
        return "-"
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def fmt_percent(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}%"


def fmt_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader(),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        time=fmt_time,
        iso=fmt_iso,
        duration=fmt_duration,
        percent=fmt_percent,
        pretty_json=fmt_json,
        status_slug=status_slug,
        ansi=ansi_html,
    )
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
