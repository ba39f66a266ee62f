"""``wsjobs sync``: pull new and changed jobs into the history (once, or ``--every N``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from workspaces_jobs.cli.output import (
    console,
    err_console,
    fmt_time,
    print_json,
    safe_text,
    styled,
)


def register(app: typer.Typer) -> None:
    app.command()(sync)


def sync(
    history: Path | None = typer.Option(
        None, "--history", help="History catalog (default: WSJOBS_HISTORY)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    full: bool = typer.Option(
        False, "--full", help="Re-list every job, not only those changed since the last sync."
    ),
    every: float | None = typer.Option(
        None,
        "--every",
        min=1.0,
        help="Keep running: one sync every SECONDS (a service; no Prefect runs are created).",
    ),
) -> None:
    """Pull everything new from the Prefect API into the history, then print what was
    added and updated. Audit it with SQL: `wsjobs sql` (see docs/history.md)."""
    from workspaces_jobs.cli.connection import connect
    from workspaces_jobs.reporting.sync import SyncProgress, sync_history

    connect()
    if every:
        _sync_forever(history, every, json_out=json_out)
        return
    show_bar = not quiet and not json_out and err_console.is_terminal
    if show_bar:
        with Progress(
            TextColumn("Syncing jobs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("sync", total=None, detail="")

            def update(p: SyncProgress) -> None:
                bar.update(
                    task,
                    total=p.total or None,
                    completed=p.done,
                    detail=f"{p.added} added, {p.updated} updated",
                )

            result = sync_history(history, progress=update, on_wait=_waiting, full=full)
    else:
        result = sync_history(history, on_wait=_waiting, full=full)
    if json_out:
        print_json(result.to_dict())
        return
    _summary(result)


def _sync_forever(history: Path | None, every: float, *, json_out: bool) -> None:
    """The history host's sync service: a loop in one process, not a run per minute.

    A failed pass (API restarting, file held by a reader) is reported and retried next
    time; the watermark makes the next pass catch up, so nothing is lost.
    """
    import time

    from workspaces_jobs.reporting.sync import sync_history

    err_console.print(f"sync: every {every:g} s (Ctrl-C to stop)")
    try:
        while True:
            started = time.monotonic()
            try:
                result = sync_history(history, on_wait=_waiting)
            except Exception as exc:
                err_console.print(f"sync failed: {type(exc).__name__}: {exc}", markup=False)
            else:
                if json_out:
                    print_json(result.to_dict())
                elif result.jobs_added or result.jobs_updated:
                    _summary(result)
            time.sleep(max(0.0, every - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return


def _waiting(message: str) -> None:
    err_console.print(safe_text(message, "yellow"), soft_wrap=True)


def _summary(result: Any) -> None:
    console.print(
        Text.assemble(
            styled(result.jobs_added, "bold"),
            " job(s) added, ",
            styled(result.jobs_updated, "bold"),
            f" updated, {result.jobs_unchanged} unchanged; {result.logs_added} log line(s) added"
            f" in {result.seconds:.2f} s",
        )
    )
    console.print(
        f"History: {result.path}  (synced up to {fmt_time(result.watermark)} from {result.source})"
    )
    if result.read_path:
        console.print(f"Read: {result.read_path}", markup=False, highlight=False, soft_wrap=True)
