"""``wsjobs sql`` (the history in a read-only DuckDB shell) and ``wsjobs history migrate``
(an old ``history.duckdb`` into the DuckLake history)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import typer

from workspaces_jobs.cli.output import console, fail, print_json

HISTORY = typer.Option(
    None, "--history", help="History catalog (default: WSJOBS_HISTORY / WSJOBS_HISTORY_CATALOG)."
)


def register(app: typer.Typer) -> None:
    app.command()(sql)
    group = typer.Typer(help="The job history: migrate an old history file.", no_args_is_help=True)
    group.command("migrate")(migrate)
    app.add_typer(group, name="history")


def sql(
    command: str | None = typer.Option(
        None, "-c", "--command", help="Run this SQL and exit (else an interactive shell)."
    ),
    csv: bool = typer.Option(False, "--csv", help="Print results as CSV."),
    history: Path | None = HISTORY,
) -> None:
    """Open the history in the DuckDB shell, read-only: the tables of docs/history.md,
    time travel with `AT (VERSION => n)`. Nothing it runs can change the history."""
    from workspaces_jobs.reporting.store import StoreError, install_extensions, locate

    try:
        loc = locate(history)
        if not loc.exists():
            raise StoreError(f"no history at {loc.display} yet: run `wsjobs sync` first")
        install_extensions((loc.kind, "ducklake"))
    except StoreError as exc:
        fail(str(exc))
    cli = duckdb_cli()
    target = loc.attach_target.replace("'", "''")
    setup = (
        f"LOAD {loc.kind}; LOAD ducklake; ATTACH '{target}' AS history (READ_ONLY); USE history;"
    )
    args = [cli, "-cmd", setup]
    if csv:
        args.append("-csv")
    if command is not None:
        args += ["-c", command]
    code = subprocess.call(args)
    raise typer.Exit(code)


def duckdb_cli() -> str:
    """The ``duckdb`` CLI installed with the package (``duckdb-cli``), else one on PATH."""
    beside = Path(sys.executable).parent / "duckdb"
    if beside.exists():
        return str(beside)
    found = shutil.which("duckdb")
    if not found:
        fail("the duckdb CLI is missing: reinstall workspaces-jobs (it depends on duckdb-cli)")
    return found


def migrate(
    source: Path | None = typer.Option(
        None, "--from", help="The old history.duckdb (default: WSJOBS_HOME/history.duckdb)."
    ),
    history: Path | None = HISTORY,
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Copy an old one-file history (history.duckdb) into the history, verify the counts,
    keep the old file. Safe to run again: it adds only rows not there yet."""
    from workspaces_jobs.reporting.migrate import migrate_file
    from workspaces_jobs.reporting.store import StoreError
    from workspaces_jobs.settings import get_settings

    old = source or get_settings().home / "history.duckdb"
    try:
        result = migrate_file(old, history)
    except StoreError as exc:
        fail(str(exc))
    if json_out:
        print_json(
            {
                "from": str(result.old),
                "history": result.history,
                "added": result.added,
                "tables": {
                    t: {"old": o, "added": a, "verified": v}
                    for t, (o, a, v) in result.tables.items()
                },
                "dropped": result.dropped,
            }
        )
        return
    for table, (old_rows, added, found) in sorted(result.tables.items()):
        console.print(f"{table}: {old_rows} row(s), {added} added, {found} verified", markup=False)
    if result.dropped:
        console.print("not carried (no place in the new schema): " + ", ".join(result.dropped))
    console.print(
        f"Migrated {result.old} into {result.history}; the old file is kept.", markup=False
    )
