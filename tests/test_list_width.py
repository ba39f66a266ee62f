"""The CLI list at 100-160 columns: the full status stays, other columns shorten first."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.synthetic import add_jobs


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("width") / "history.duckdb"
    created = datetime(2026, 3, 2, 10, tzinfo=UTC)
    with open_store(path) as con:
        add_jobs(
            con,
            [
                {
                    "status": status,
                    "reason": reason,
                    "info": "Update openssl on the lab and branch-office devices " * 2,
                    "owner": "operations-team",
                    "created": created + timedelta(minutes=i),
                    "devices": ["dev01", "dev02"],
                }
                for i, (status, reason) in enumerate(
                    [
                        ("Completed with errors", None),
                        ("Completed", None),
                        ("Error", "inactivity"),
                        ("Canceled by the user", None),
                    ]
                )
            ],
        )
    return path


@pytest.mark.parametrize("width", [100, 120, 160])
def test_status_is_never_cut(history: Path, width: int) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "workspaces_jobs.cli",
            "list",
            "--no-sync",
            "--history",
            str(history),
            "--age",
            "all",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": str(width), "TERM": "dumb"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for status in ("Completed with errors", "Error (inactivity)", "Canceled by the user"):
        assert status in text, f"{status!r} cut at {width} columns:\n{text}"
    assert max(len(line) for line in text.splitlines()) <= width
