"""One filter registry: the CLI, the web list and the docs (docs/jobs-list.md) name the same fields.

``reporting/fields.py`` declares each filter field once; these tests fail when a face
adds, drops or respells one (the registry/doc test of issue #20).
"""

from __future__ import annotations

import re
from dataclasses import fields as dc_fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer.main

from workspaces_jobs.cli import app
from workspaces_jobs.reporting.fields import (
    DEVICE,
    EXPORT,
    FILTER_FIELDS,
    LIST,
    SAVE,
    VIEW,
    FilterField,
    fields_for,
)
from workspaces_jobs.reporting.filters import FilterSpec, build_where
from workspaces_jobs.reporting.windows import resolve_zone

JOBS_LIST_DOC = (Path(__file__).parent.parent / "docs" / "jobs-list.md").read_text(encoding="utf-8")
ALL_OPTIONS = {o for f in FILTER_FIELDS for o in f.cli_options}


def _command(path: str) -> Any:
    cmd: Any = typer.main.get_command(app)
    for part in path.split():
        cmd = cmd.commands[part]
    return cmd


def _options(cmd: Any) -> set[str]:
    out: set[str] = set()
    for param in cmd.params:
        if param.param_type_name == "option":
            out.update(param.opts)
            out.update(param.secondary_opts)
    return out


def _readme_rows() -> dict[str, list[str]]:
    start = JOBS_LIST_DOC.index("| field | CLI option | URL | web control | meaning |")
    rows: dict[str, list[str]] = {}
    for line in JOBS_LIST_DOC[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        rows[cells[0].strip("`")] = cells
    return rows


def test_filter_spec_has_exactly_the_registry_fields() -> None:
    assert [f.name for f in dc_fields(FilterSpec)] == [f.name for f in FILTER_FIELDS]


@pytest.mark.parametrize("command", [LIST, DEVICE, EXPORT, SAVE, VIEW])
def test_each_command_takes_exactly_its_registry_options(command: str) -> None:
    opts = _options(_command(command))
    wanted = {o for f in fields_for(command) for o in f.cli_options}
    assert wanted <= opts, f"{command} lacks {sorted(wanted - opts)}"
    others = (ALL_OPTIONS - wanted) & opts
    # --filter/-f is the saved-filter option, not a field; every other spelling of a field
    # must come from the registry.
    assert others <= {"--filter", "-f", "--json"}, f"{command} spells fields by hand: {others}"


def test_the_readme_table_names_every_field_its_option_and_url() -> None:
    rows = _readme_rows()
    assert list(rows) == [f.name for f in FILTER_FIELDS]
    for f in FILTER_FIELDS:
        _, cli, url, _control, meaning = rows[f.name]
        for option in f.cli_options:
            assert f"{option}" in cli, f"docs/jobs-list.md row {f.name} lacks {option}"
        assert url.startswith(f"`{f.url_param}`"), (f.name, url)
        assert meaning


def test_the_web_request_reads_and_writes_every_field_by_its_url_name() -> None:
    from workspaces_jobs.web.listing import ListRequest

    samples: dict[str, list[str]] = {
        "age": ["week"],
        "since": ["2026-11-01"],
        "until": ["2026-11-30"],
        "status": ["error"],
        "owner": ["bob,alice"],
        "action": ["ok"],
        "device": ["t1"],
        "q": ["50%"],
        "search_logs": ["denied"],
        "started_over": ["1h"],
        "recovered": ["yes"],
        "stopped_by": ["bob"],
        "sort": ["owner"],
        "dir": ["asc"],
        "limit": ["10"],
        "columns": ["id", "status"],
        "tz": ["Europe/Paris"],
    }
    assert set(samples) == {f.url_param for f in FILTER_FIELDS}
    req = ListRequest.from_params(samples)
    assert not req.problems
    spec = req.spec()
    for f in FILTER_FIELDS:
        assert getattr(spec, f.name) not in (None, ()), f"web ignores {f.url_param}"
    assert {name for name, _ in req.pairs()} == set(samples)


@pytest.mark.parametrize("f", [f for f in FILTER_FIELDS if f.where], ids=lambda f: f.name)
def test_every_row_filter_adds_sql_and_words(f: FilterField) -> None:
    values: dict[str, Any] = {
        "age": "week",
        "since": "2026-11-01",
        "until": "2026-11-30",
        "statuses": ("error",),
        "owners": ("bob",),
        "actions": ("ok",),
        "devices": ("t1",),
        "search": "x",
        "search_logs": "y",
        "started_over": "1h",
        "recovered": "yes",
        "stopped_by": ("bob",),
    }
    spec = FilterSpec.make(**{f.name: values[f.name]})
    now = datetime(2026, 11, 18, 12, tzinfo=UTC)
    where = build_where(spec, tz=resolve_zone("UTC"), now=now, default_age="all")
    assert where.sql != "TRUE" and where.parts, f.name
