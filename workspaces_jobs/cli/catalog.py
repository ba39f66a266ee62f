"""``wsjobs actions`` and ``wsjobs devices``: what can run, and where."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from workspaces_jobs.cli.output import console, print_json


def register(app: typer.Typer) -> None:
    app.command()(actions)
    app.command()(devices)


def actions(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the actions you can run, with their parameters and steps."""
    from workspaces_jobs.catalog import load_actions
    from workspaces_jobs.jobs import action_names

    yaml_actions = load_actions()
    rows: list[dict[str, Any]] = []
    for name, description in action_names().items():
        spec = yaml_actions.get(name)
        rows.append(
            {
                "name": name,
                "description": description,
                "kind": "script" if spec else "python",
                "params": {k: v.model_dump() for k, v in spec.params.items()} if spec else {},
                "steps": [s.model_dump() for s in spec.steps] if spec else [],
            }
        )
    if json_out:
        print_json(rows)
        return
    table = Table("action", "kind", "parameters", "steps", "description")
    for row in rows:
        params = ", ".join(f"{k}{'*' if v['required'] else ''}" for k, v in row["params"].items())
        steps = " → ".join(
            s["name"] + ("" if s["critical"] else " (non-critical)") for s in row["steps"]
        )
        table.add_row(row["name"], row["kind"], params or "-", steps or "-", row["description"])
    console.print(table)


def devices(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the devices in the inventory."""
    from workspaces_jobs.catalog import load_inventory

    inv = load_inventory()
    rows = [d.model_dump(exclude_defaults=True) | {"name": d.name} for d in inv.devices]
    if json_out:
        print_json(rows)
        return
    table = Table("device", "transport", "tags", "address")
    for d in inv.devices:
        addr = f"{d.user + '@' if d.user else ''}{d.host}:{d.port}" if d.host else "-"
        table.add_row(d.name, d.transport, ", ".join(d.tags) or "-", addr)
    console.print(table)
