"""One Prefect server for the whole test run: the managed local server ``wsjobs`` uses.

Tests run against the same embedded default a user gets (``prefect server start`` on
127.0.0.1 under a temporary ``WSJOBS_HOME``), so jobs are executed by real executor
processes and read back through the real API. The test inventory and actions live in
``tests/data``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def wsjobs_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("wsjobs-home")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.update(
        WSJOBS_HOME=str(home),
        WSJOBS_INVENTORY=str(DATA / "inventory.yaml"),
        WSJOBS_ACTIONS=str(DATA / "actions"),
        WSJOBS_SERVER_PORT=str(_free_port()),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_TO_API_BATCH_INTERVAL="0.3",
        # No watchdog beside the tests: it would race the tests that sweep themselves.
        # tests/test_server.py runs a managed server of its own with its companions.
        WSJOBS_COMPANIONS="",
    )
    from workspaces_jobs import server

    api = server.ensure_api()
    yield {"home": str(home), "api": api}
    server.stop()


@pytest.fixture(scope="session")
def api_url(wsjobs_env: dict[str, str]) -> str:
    return wsjobs_env["api"]
