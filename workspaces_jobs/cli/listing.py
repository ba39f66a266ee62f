"""``wsjobs list``, ``filters``, ``view``, ``device`` and ``export``: the Jobs list view.

Every command builds a :class:`~workspaces_jobs.reporting.query.JobQuery` from the same
flags, so ``list``, ``device`` and ``export`` select the same rows for the same filter.
``list``, ``device`` and ``export`` read the history as the background sync left it and
warn when it is stale (:mod:`reporting.freshness`); ``--sync`` syncs it first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from workspaces_jobs.cli.filteropts import filter_options
from workspaces_jobs.cli.output import (
    console,
    err_console,
    print_json,
    print_warning,
    safe_text,
    styled_status,
)
from workspaces_jobs.ids import short_len
from workspaces_jobs.reporting import fields as registry

HISTORY = typer.Option(None, "--history", help="DuckDB history file (default: WSJOBS_HISTORY).")
FILTER = typer.Option(
    None, "--filter", "-f", help="A predefined or saved filter (see `wsjobs filters`)."
)
JSON = typer.Option(False, "--json", help="Print rows as JSON (times in UTC).")
NO_SYNC = typer.Option(
    True,
    "--no-sync/--sync",
    help="--sync: sync the history first, in the foreground. Default: read it as the"
    " background sync left it, warning when older than WSJOBS_HISTORY_STALE_AFTER.",
)


def register(app: typer.Typer) -> None:
    app.command("list")(list_jobs)
    app.command("device")(device_history)
    app.command("export")(export)
    filters_app = typer.Typer(
        help="Predefined and saved filters.", invoke_without_command=True, no_args_is_help=False
    )
    filters_app.callback(invoke_without_command=True)(filters)
    filters_app.command("save")(filters_save)
    filters_app.command("delete")(filters_delete)
    app.add_typer(filters_app, name="filters")
    view_app = typer.Typer(help="Default columns, sort, age and limit of the jobs list.")
    view_app.command("show")(view_show)
    view_app.command("set")(view_set)
    view_app.command("reset")(view_reset)
    app.add_typer(view_app, name="view")


@contextmanager
def _store(history: Path | None, *, write: bool = False) -> Iterator[Any]:
    from workspaces_jobs.reporting.store import open_store

    # Reads never create the file (nor its folder): a missing one is a one-line error.
    with open_store(history, read_only=not write, on_wait=_waiting) as con:
        yield con


@contextmanager
def _saved_settings(history: Path | None) -> Iterator[Any]:
    """For ``filters`` and ``view show``: a missing history means nothing is saved yet, so
    the built-ins are read from an empty in-memory history; nothing is created."""
    import duckdb

    from workspaces_jobs.reporting.store import locate, migrate

    if locate(history).exists():  # a PostgreSQL catalog always "exists"
        with _store(history) as con:
            yield con
        return
    con = duckdb.connect(":memory:")
    try:
        migrate(con)
        yield con
    finally:
        con.close()


def _waiting(message: str) -> None:
    err_console.print(safe_text(message, "yellow"), soft_wrap=True)


def _sync(history: Path | None) -> None:
    """Refresh the history before showing it; a failed sync (the API does not answer, the
    file is locked) warns and shows what is there."""
    from workspaces_jobs.cli.connection import connect
    from workspaces_jobs.errors import ServerUnreachable
    from workspaces_jobs.reporting.store import StoreError
    from workspaces_jobs.reporting.sync import sync_history

    try:
        connect()
        with err_console.status("Syncing the history…"):
            sync_history(history, on_wait=_waiting)
    except (StoreError, ServerUnreachable) as exc:
        print_warning(f"not synced, showing the history as it is: {exc}")


# --- list ---------------------------------------------------------------------------------


@filter_options(registry.LIST)
def list_jobs(
    filters: dict[str, Any],
    filter_name: str | None = FILTER,
    json_out: bool = JSON,
    no_sync: bool = NO_SYNC,
    history: Path | None = HISTORY,
) -> None:
    """Jobs, newest first: today's by default. Flags refine a --filter; see docs/jobs-list.md."""
    _show(filters, filter_name, history=history, no_sync=no_sync, json_out=json_out)


def _show(
    fields: dict[str, Any],
    filter_name: str | None,
    *,
    history: Path | None,
    no_sync: bool,
    json_out: bool,
    history_of: str | None = None,
) -> None:
    from workspaces_jobs.reporting.query import JobQuery, json_rows, page_and_total

    JobQuery(filter_name, history_of=history_of, **fields)  # bad flags fail before a sync
    if not no_sync:
        _sync(history)
    from workspaces_jobs.reporting.store import snapshot

    with _store(history) as opened, snapshot(opened) as con:  # one catalog read, one view
        plan = JobQuery(filter_name, con=con, history_of=history_of, **fields).plan(con)
        rows, total = page_and_total(con, plan)
        stale = _stale(con)
    if json_out:
        print_json(json_rows(rows))
    else:
        _table(rows, plan, total)
    _warn(stale)


def _stale(con: Any) -> str | None:
    from workspaces_jobs.reporting.freshness import stale_warning

    return stale_warning(con)


def _warn(stale: str | None) -> None:
    if stale:
        err_console.print(f"warning: {stale}", markup=False, soft_wrap=True)


def _cell(name: str, value: Any, row: dict[str, Any], plan: Any) -> Any:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        # Narrow terminals get short times so the text columns keep some room.
        fmt = "%Y-%m-%d %H:%M" if console.width >= 140 else "%m-%d %H:%M"
        return value.astimezone(plan.tz).strftime(fmt)
    if name in ("status", "device_status"):
        reason = row.get("reason") if name == "status" else None
        return styled_status(str(value), reason)
    if name == "progress":
        return f"{value:.0f}%"
    if name == "duration":
        return f"{value:.1f}s"
    return safe_text(",".join(map(str, value)) if isinstance(value, list) else str(value))


def _status_text(name: str, row: dict[str, Any]) -> str:
    value = str(row.get(name) or "-")
    reason = row.get("reason") if name == "status" else None
    return f"{value} ({reason})" if reason else value


def _table(rows: list[dict[str, Any]], plan: Any, total: int) -> None:
    shown = [c for c in plan.columns if not (c == "reason" and "status" in plan.columns)]
    merge = "devices_ok" in shown and "devices_failed" in shown
    table = Table(
        caption=f"{len(rows)} of {total} job(s): {plan.description}; times in {plan.tz}",
        caption_justify="left",
    )
    headers: list[str] = []
    for name in shown:
        if merge and name == "devices_failed":
            continue
        header = (
            "devices ok/failed" if merge and name == "devices_ok" else plan.allowed[name].header
        )
        headers.append(name)
        fixed = name == "id" or plan.allowed[name].kind == "number"
        if name in ("status", "device_status"):
            # The status is never cut ("Compl…" hides whether it had errors): the other
            # columns wrap or shorten first.
            width = max([len(header), *(len(_status_text(name, r)) for r in rows)])
            table.add_column(header, no_wrap=True, min_width=width, overflow="fold")
            continue
        table.add_column(
            header,
            no_wrap=fixed,
            min_width=None if fixed else min(len(header), 12),
            ratio=2 if name in ("info", "parameters", "tags", "state_message") else None,
        )
    # Ids as short as they can be while unique among the rows shown (see workspaces_jobs.ids).
    id_len = short_len(str(row["id"]) for row in rows)
    for row in rows:
        cells = []
        for name in headers:
            if merge and name == "devices_ok":
                cells.append(f"{row['devices_ok']}/{row['devices_failed']}")
            elif name == "id":
                cells.append(str(row["id"])[:id_len])
            else:
                cells.append(_cell(name, row.get(name), row, plan))
        table.add_row(*cells)
    if not rows:
        console.print(f"No jobs: {plan.description}.", markup=False)
        return
    console.print(table)


# --- device history -----------------------------------------------------------------------


@filter_options(registry.DEVICE)
def device_history(
    filters: dict[str, Any],
    name: str = typer.Argument(..., help="Device name."),
    filter_name: str | None = FILTER,
    json_out: bool = JSON,
    no_sync: bool = NO_SYNC,
    history: Path | None = HISTORY,
) -> None:
    """What ran on one device, newest first, with that device's own result in each job."""
    _show(
        filters, filter_name, history=history, no_sync=no_sync, json_out=json_out, history_of=name
    )


# --- export -------------------------------------------------------------------------------


@filter_options(registry.EXPORT)
def export(
    filters: dict[str, Any],
    out: Path = typer.Option(..., "--out", "-o", help="File to write."),
    fmt: str | None = typer.Option(
        None, "--format", help="csv|json|parquet|xlsx|html (default: from --out's suffix)."
    ),
    with_steps: bool = typer.Option(False, "--with-steps", help="Add per-device, per-step rows."),
    with_logs: bool = typer.Option(False, "--with-logs", help="Add the jobs' log lines."),
    raw_csv: bool = typer.Option(
        False,
        "--raw-csv",
        help="CSV: write cells as stored (default: a cell starting with = + - @ gets a "
        "leading ' so spreadsheets do not run it as a formula).",
    ),
    filter_name: str | None = FILTER,
    no_sync: bool = NO_SYNC,
    history: Path | None = HISTORY,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write every job `list` would show for these flags (all pages) to a file."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from workspaces_jobs.reporting.export import check_writable, detect_format
    from workspaces_jobs.reporting.query import JobQuery

    JobQuery(filter_name, **filters)  # validate the flags before syncing
    detect_format(fmt, out)
    check_writable(out)
    if not no_sync:
        _sync(history)
    with _store(history) as con:
        query = JobQuery(filter_name, con=con, **filters)
        with Progress(
            TextColumn("Exporting"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
            transient=True,
            disable=json_out or not err_console.is_terminal,
        ) as bar:
            task = bar.add_task("export", total=None)
            result = query.export(
                fmt,
                out,
                with_steps=with_steps,
                with_logs=with_logs,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                raw_csv=raw_csv,
            )
        description = query.plan(con).description
        stale = _stale(con)
    if json_out:
        print_json(
            {
                "format": result.format,
                "files": [str(f) for f in result.files],
                "rows": result.rows,
                "steps": result.steps,
                "logs": result.logs,
                "description": description,
            }
        )
    else:
        files = ", ".join(str(f) for f in result.files)
        console.print(f"{result.rows} job(s) written to {files} ({description})", markup=False)
    _warn(stale)


# --- filters ------------------------------------------------------------------------------


def filters(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
    history: Path | None = HISTORY,
) -> None:
    """List predefined and saved filters. Use one with `wsjobs list --filter NAME`."""
    if ctx.invoked_subcommand is not None:
        return
    if (current := _login(history)) is not None:
        found = current.call("GET", "/filters")
    else:
        from workspaces_jobs.reporting.saved import list_filters

        with _saved_settings(history) as con:
            found = [f.to_json() for f in list_filters(con)]
    if json_out:
        print_json(found)
        return
    table = Table("name", "kind", "meaning", "by")
    for f in found:
        kind = "predefined" if f["predefined"] else "saved"
        table.add_row(f["name"], kind, f["description"], f["owner"] or "-")
    console.print(table)


def _login(history: Path | None) -> Any:
    """The login to act through, unless ``--history`` names a history to act on here."""
    from workspaces_jobs.cli.login import remote

    return remote() if history is None else None


@filter_options(registry.SAVE)
def filters_save(
    filters: dict[str, Any],
    name: str = typer.Argument(..., help="Filter name: lower-case letters, digits, - and _."),
    base: str | None = typer.Option(None, "--filter", "-f", help="Start from this filter."),
    history: Path | None = HISTORY,
) -> None:
    """Save (or replace) a filter made of the same flags as `wsjobs list`."""
    from workspaces_jobs.reporting.filters import FilterSpec
    from workspaces_jobs.reporting.saved import get_filter, save_filter

    spec = FilterSpec.make(**filters)
    if (current := _login(history)) is not None:
        body = {"name": name, "spec": spec.to_json(), "base": base or ""}
        data = current.call("POST", "/filters", body)
        console.print(f"Saved filter {data['name']}: {data['description']}", markup=False)
        return
    with _store(history, write=True) as con:
        if base:
            spec = get_filter(con, base).refined(spec)
        saved = save_filter(con, name, spec)
    console.print(f"Saved filter {saved.name}: {saved.description}", markup=False)


def filters_delete(
    name: str = typer.Argument(..., help="A saved filter's name."),
    history: Path | None = HISTORY,
) -> None:
    """Delete a saved filter (predefined ones stay)."""
    from workspaces_jobs.reporting.saved import delete_filter

    if (current := _login(history)) is not None:
        current.call("POST", f"/filters/{name}/delete")
    else:
        with _store(history, write=True) as con:
            delete_filter(con, name)
    console.print(f"Deleted filter {name}", markup=False)


# --- view settings ------------------------------------------------------------------------


def _print_view(view: Any, json_out: bool) -> None:
    data = view if isinstance(view, dict) else view.to_json()
    if json_out:
        print_json(data)
        return
    table = Table("setting", "value")
    for key, value in data.items():
        shown = ",".join(value) if isinstance(value, list) else value
        if key == "tz" and value is None:
            shown = "(system zone)"
        if key == "limit" and value == 0:
            shown = "0 (all)"
        table.add_row(key, str(shown))
    console.print(table)


def view_show(
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
    history: Path | None = HISTORY,
) -> None:
    """The list's current defaults."""
    from workspaces_jobs.reporting.saved import read_view

    if (current := _login(history)) is not None:
        _print_view(current.call("GET", "/view"), json_out)
        return
    with _saved_settings(history) as con:
        _print_view(read_view(con), json_out)


@filter_options(registry.VIEW)
def view_set(
    filters: dict[str, Any],
    json_out: bool = typer.Option(False, "--json", help="Print the new view as JSON."),
    history: Path | None = HISTORY,
) -> None:
    """Change the list's defaults (what `wsjobs list` shows with no flags)."""
    from workspaces_jobs.reporting.saved import set_view

    if (current := _login(history)) is not None:
        changes = {k: v for k, v in filters.items() if v is not None}
        _print_view(current.call("POST", "/view", changes), json_out)
        return
    with _store(history, write=True) as con:
        view = set_view(con, **filters)
    _print_view(view, json_out)


def view_reset(
    json_out: bool = typer.Option(False, "--json", help="Print the defaults as JSON."),
    history: Path | None = HISTORY,
) -> None:
    """Forget every view setting: back to the built-in defaults."""
    from workspaces_jobs.reporting.saved import reset_view

    if (current := _login(history)) is not None:
        _print_view(current.call("POST", "/view/reset"), json_out)
        return
    with _store(history, write=True) as con:
        view = reset_view(con)
    _print_view(view, json_out)
