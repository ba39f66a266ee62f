"""CLI options derived from the filter registry (:mod:`workspaces_jobs.reporting.fields`).

``@filter_options(command)`` adds one typer option per registry field the command takes
to a command function, and hands the command the values the user set as
``filters={FilterSpec field: value}``. So ``list``, ``device``, ``export``, ``filters
save`` and ``view set`` cannot drift apart: a field added to the registry appears in
each of them, with the same spelling and help.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from workspaces_jobs.reporting.fields import FilterField, fields_for, spec_values

F = TypeVar("F", bound=Callable[..., Any])

_TYPES: dict[str, Any] = {
    "one": str | None,
    "many": list[str],
    "bool": bool | None,
    "int": int | None,
    "columns": str | None,
}


def typer_option(f: FilterField, command: str) -> Any:
    """The ``typer.Option`` of one field in one command."""
    names = [f.option, *([f.short] if f.short else [])]
    default: Any = [] if f.kind == "many" else None
    return typer.Option(default, *names, help=f.help_in(command))


def filter_options(command: str) -> Callable[[F], F]:
    """Give ``func`` (which takes ``filters: dict``) the registry's options for ``command``."""

    def decorate(func: F) -> F:
        own = [p for p in inspect.signature(func).parameters.values() if p.name != "filters"]
        taken = fields_for(command)
        added = [
            inspect.Parameter(
                f.param,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer_option(f, command),
                annotation=_TYPES[f.kind],
            )
            for f in taken
        ]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            values = {f.param: kwargs.pop(f.param) for f in taken}
            return func(filters=spec_values(values), **kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        hints = {k: v for k, v in func.__annotations__.items() if k != "filters"}
        hints.update({p.name: p.annotation for p in added})
        wrapper.__annotations__ = hints
        return wrapper  # type: ignore[return-value]

    return decorate
