"""The type check sees across the ``package-dir`` mapping: a deliberate wrong call fails it.

``flows/``, ``tasks/`` and ``reporting/`` install as ``workspaces_jobs.flows|tasks|reporting``;
before ``scripts/typecheck`` mypy could not resolve those names and typed every such import
as ``Any``. This copies the sources to a temporary folder, writes two wrong calls across
mapped imports (``reporting`` → ``flows`` and the core → ``reporting``) and runs the real
script there: both must be reported, at their real source paths. Pure: no server.

The copy starts from the checkout's mypy cache when there is one (``scripts/test`` runs
``scripts/typecheck`` before pytest): mypy then re-checks only what changed and what depends
on it — the two edited modules are always re-checked — instead of all of Prefect, pydantic
and SQLAlchemy again (measured at load 15: 217 s wall / 23 s CPU from nothing, 6.5 s /
0.7 s for an unchanged copy with the cache).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPY = ["pyproject.toml", "workspaces_jobs", "flows", "tasks", "reporting", "scripts"]


def test_a_wrong_call_across_a_mapped_import_fails_the_type_check(tmp_path: Path) -> None:
    for name in COPY:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tmp_path / name)
    cache = ROOT / ".mypy_cache"
    if cache.is_dir():
        shutil.copytree(cache, tmp_path / ".mypy_cache")
    store = tmp_path / "reporting" / "store.py"
    store.write_text(
        store.read_text(encoding="utf-8")
        + "\n\ndef _wrong() -> None:\n"
        + "    from workspaces_jobs.flows.hooks import record_status\n\n"
        + "    record_status(1)\n",
        encoding="utf-8",
    )
    jobs = tmp_path / "workspaces_jobs" / "jobs.py"
    jobs.write_text(
        jobs.read_text(encoding="utf-8")
        + "\n\ndef _wrong_too() -> None:\n"
        + "    from workspaces_jobs.reporting.windows import age_window\n\n"
        + "    age_window(7, tz=None)\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "scripts" / "typecheck.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert any(
        line.startswith("reporting/store.py:") and '"record_status"' in line for line in errors
    ), out
    assert any(
        line.startswith("workspaces_jobs/jobs.py:") and '"age_window"' in line for line in errors
    ), out
    # Nothing else: the copy is otherwise clean, so the check is not failing for another reason.
    assert {line.split(":")[0] for line in errors} == {
        "reporting/store.py",
        "workspaces_jobs/jobs.py",
    }
