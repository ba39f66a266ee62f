"""The ``prefect.yaml`` pull step: run deployments from the code this host has installed.

``prefect.yaml`` names its entrypoints as files (``flows/script_action.py:script_action``),
resolved against the working directory of the flow-run process a worker starts. A
literal path in the committed file would only work on the machine it was written on, and
``{{ $PWD }}`` is resolved on the worker at run time from whatever directory the worker
happened to be started in. This step instead asks the installed package where its
``flows/`` folder is, so every worker host runs the version it has installed, wherever
it lives:

* editable install (``pip install -e .`` from a checkout): the checkout's root, which
  holds ``flows/``;
* regular install (a wheel): the ``workspaces_jobs`` package folder, because the root
  folders are installed under that namespace (``workspaces_jobs/flows/...``).

Upgrading a worker host is therefore "install the new version, restart the worker".
"""

from __future__ import annotations

import os
from pathlib import Path

#: A file every layout has at ``<root>/flows/``; its presence marks the root.
_MARKER = Path("flows") / "script_action.py"


def project_root() -> Path:
    """The folder the ``prefect.yaml`` entrypoints are relative to, for this install."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent, package):
        if (candidate / _MARKER).is_file():
            return candidate
    raise RuntimeError(
        f"cannot find {_MARKER} next to {package}: reinstall workspaces-jobs "
        "(pip install -e . from a checkout, or pip install workspaces-jobs)"
    )


def set_project_directory() -> dict[str, str]:
    """Pull step (``workspaces_jobs.deploy.set_project_directory``): chdir to the root.

    Returns ``{"directory": ...}`` like Prefect's own ``set_working_directory``.
    """
    root = project_root()
    os.chdir(root)
    return {"directory": str(root)}
