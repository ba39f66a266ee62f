"""The wheel carries every file the code loads at run time (SQL, templates, demo data).

Editable installs read files straight from the checkout, so a missing package-data glob
would only show on a real install: build the wheel and compare with the source tree.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
#: Source folder → where its files land inside the wheel.
DATA = {
    "workspaces_jobs/data": "workspaces_jobs/data",
    "workspaces_jobs/notify/templates": "workspaces_jobs/notify/templates",
    "workspaces_jobs/web/templates": "workspaces_jobs/web/templates",
    "workspaces_jobs/web/static": "workspaces_jobs/web/static",
    "reporting/sql": "workspaces_jobs/reporting/sql",
    "reporting/templates": "workspaces_jobs/reporting/templates",
}


@pytest.mark.slow
def test_wheel_has_every_data_file_and_module(tmp_path: Path) -> None:
    subprocess.run(
        # --no-build-isolation: build with the installed setuptools (the test extra), so
        # the build fetches nothing (no network at test time).
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{dest}/{path.relative_to(ROOT / src)}"
        for src, dest in DATA.items()
        for path in (ROOT / src).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    for folder, dest in {
        "flows": "workspaces_jobs/flows",
        "tasks": "workspaces_jobs/tasks",
        "reporting": "workspaces_jobs/reporting",
    }.items():
        expected |= {
            f"{dest}/{p.relative_to(ROOT / folder)}" for p in (ROOT / folder).rglob("*.py")
        }
    assert expected - names == set()
    # nothing installs top-level packages that would shadow other projects' modules
    assert not {n.split("/")[0] for n in names} & {"flows", "tasks", "reporting"}
