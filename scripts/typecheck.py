"""Type-check every module under the name it is installed as (run by ``scripts/typecheck``).

``flows/``, ``tasks/`` and ``reporting/`` install as ``workspaces_jobs.flows|tasks|reporting``
through setuptools' ``package-dir``. mypy resolves imports from folders, not from
``package-dir`` (and the editable install is an import hook mypy does not run), so run on
the source folders it would see ``workspaces_jobs.flows`` as missing and, before this
script, as ``Any``: a wrong call across a mapped import passed.

This builds the installed layout as a tree of symbolic links under ``build/typecheck/``
(read from ``[tool.setuptools.package-dir]``, so a new mapping needs no change here), runs
``mypy -p workspaces_jobs`` on it, and prints mypy's messages with the real source paths
(``flows/hooks.py:12: error: ...``). Exit status is mypy's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "workspaces_jobs"


def package_dirs(root: Path) -> dict[str, Path]:
    """``{dotted package: source folder}`` from pyproject's ``package-dir`` table."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: (root / folder).resolve() for name, folder in mapping.items()}


def build_tree(root: Path, tree: Path) -> None:
    """Mirror the installed ``workspaces_jobs`` under ``tree``.

    The top package is a real folder whose entries link to ``workspaces_jobs/``'s entries;
    each mapped subpackage is one link to its source folder, which also hides any folder
    of the same name in ``workspaces_jobs/``.
    """
    dirs = package_dirs(root)
    if tree.exists():
        shutil.rmtree(tree)
    top = tree / PACKAGE
    top.mkdir(parents=True)
    mapped = {name.split(".", 1)[1] for name in dirs if name.startswith(PACKAGE + ".")}
    for entry in sorted(dirs[PACKAGE].iterdir()):
        if entry.name in mapped or entry.name == "__pycache__":
            continue
        (top / entry.name).symlink_to(entry)
    for name, folder in sorted(dirs.items()):
        if name == PACKAGE:
            continue
        parts = name.split(".")[1:]
        if len(parts) != 1:
            raise SystemExit(f"error: nested package-dir mapping {name!r} is not supported here")
        (top / parts[0]).symlink_to(folder, target_is_directory=True)


def real_paths(text: str, tree: Path, root: Path) -> str:
    """Rewrite the paths mypy prints (relative to ``tree``, through links or not) to the
    source paths a reader opens, relative to ``root`` (``flows/hooks.py:12: error: ...``)."""

    def fix(match: re.Match[str]) -> str:
        source = (tree / match.group(1)).resolve()
        return os.path.relpath(source, root) if source.exists() else match.group(1)

    return re.sub(r"^([^\s:]+\.pyi?)(?=:)", fix, text, flags=re.M)


def main(argv: list[str]) -> int:
    root = ROOT
    tree = root / "build" / "typecheck"
    build_tree(root, tree)
    env = {**os.environ, "MYPYPATH": str(tree)}
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml")]
    cmd += ["--cache-dir", str(root / ".mypy_cache")]
    cmd += ["-p", PACKAGE, *argv]
    # cwd is the tree: mypy looks in the working folder first, where ``workspaces_jobs/``
    # (without flows/tasks/reporting) would otherwise win.
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    sys.stdout.write(real_paths(proc.stdout, tree, root))
    sys.stderr.write(real_paths(proc.stderr, tree, root))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
