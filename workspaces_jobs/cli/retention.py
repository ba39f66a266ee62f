"""``wsjobs prune``: the history's retention, and notifier variables of jobs Prefect dropped."""

from __future__ import annotations

from pathlib import Path

import typer

from workspaces_jobs.cli.output import console, fail, print_json


def register(app: typer.Typer) -> None:
    app.command()(prune)


def prune(
    older_than: str = typer.Option(
        ..., "--older-than", help="Age of the final jobs to remove: 90d, 12w, 18mo, 2y."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; change nothing."),
    history: Path | None = typer.Option(
        None, "--history", help="DuckDB history file (default: WSJOBS_HISTORY)."
    ),
    history_only: bool = typer.Option(
        False, "--history-only", help="Do not clean the notifier's variables in Prefect."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Remove final jobs older than --older-than from the history (with their steps,
    devices, logs, states and notifications; never a Pending or In progress job), and the
    notification variables of jobs Prefect no longer has. Prints what it removed."""
    from workspaces_jobs import clock
    from workspaces_jobs.reporting.prune import parse_age, prune_history
    from workspaces_jobs.reporting.store import StoreError, history_path, open_store

    age = parse_age(older_than)
    file = history_path(history)
    if not file.exists():  # a read must not create the file: nothing to prune
        fail(f"no history file at {file}: run `wsjobs sync` first, or pass --history FILE")
    try:
        with open_store(file) as con:
            result = prune_history(con, age, now=clock.now(), dry_run=dry_run)
    except StoreError as exc:
        fail(str(exc))
    orphans: list[str] = []
    if not history_only:
        from prefect.client.orchestration import get_client

        from workspaces_jobs.cli.connection import connect
        from workspaces_jobs.notify.cleanup import remove_orphan_variables

        connect()
        with get_client(sync_client=True) as client:
            orphans = [o.name for o in remove_orphan_variables(client, dry_run=dry_run)]
    if json_out:
        print_json({**result.to_dict(), "variables": orphans})
        return
    verb = "would remove" if dry_run else "removed"
    detail = ", ".join(f"{n} {table}" for table, n in sorted(result.rows.items()) if n)
    console.print(
        f"History {file}: {verb} {result.jobs} job(s) that ended before "
        f"{result.cutoff:%Y-%m-%d %H:%M} UTC" + (f" ({detail} rows)" if detail else ""),
        markup=False,
    )
    if not history_only:
        console.print(
            f"Prefect: {verb} {len(orphans)} notification variable(s) of jobs it no longer has",
            markup=False,
        )
