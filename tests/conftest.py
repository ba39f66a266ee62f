"""The test run's environment, its one Prefect server, and the end of every process it starts.

Tests run against the same embedded default a user gets (``prefect server start`` on
127.0.0.1 under a temporary ``WSJOBS_HOME``), so jobs are executed by real executor
processes and read back through the real API. The test inventory and actions live in
``tests/data``.

The server is the ``prefect_server`` fixture, requested by the modules and tests that need
it (``pytestmark = pytest.mark.usefixtures("prefect_server")``): pure tests do not wait
for one. A test that reaches the API without asking still works (the product starts the
managed server on first use) and the session still stops it.

Every process the run starts carries the run's marker (tests/testprocs.py) and is ended at
the session's end, at exit, and on SIGTERM/SIGHUP; a run killed outright has its leftovers
ended by the next run. ``browser`` is a headless Chromium for the web tests, one per module
(tests/webauth.py has the signed-in pages and the ``wsjobs ui`` server). ``--reverse`` runs
the collected tests in reverse order (the suite must pass in any order).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testprocs
from proctree import free_port

DATA = Path(__file__).parent / "data"

_basetemp: list[Path] = []
#: This run's marker, inherited by every process started from here on.
RUN = testprocs.install(lambda: _basetemp[0] if _basetemp else None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse",
        action="store_true",
        help="run the collected tests in reverse order (order independence check)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse"):
        items.reverse()


def pytest_sessionstart(session: pytest.Session) -> None:
    reaped = testprocs.reap_stale(RUN)
    if reaped:
        print(f"\nended {len(reaped)} process(es) left by an earlier interrupted test run")


#: Seconds per test file (setup + call + teardown of its tests, its module fixtures
#: included): where the suite's time goes, printed at the end of a run of several files.
_file_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::", 1)[0]
    _file_seconds[path] = _file_seconds.get(path, 0.0) + report.duration


#: Tests that started the run's managed Prefect server without asking for ``prefect_server``
#: (a pure test should not pay for a server; one that needs it should say so).
_unasked_starts: list[str] = []


#: The run's own WSJOBS_HOME (set by ``wsjobs_env``): a test that points WSJOBS_HOME at a
#: home of its own (and writes a server record there) has not started the run's server.
_session_home: list[Path] = []


def _server_file() -> Path | None:
    return _session_home[0] / "prefect" / "server.json" if _session_home else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    marker = _server_file()
    before = marker is not None and marker.exists()
    yield
    if marker is not None and not before and marker.exists():
        if "prefect_server" not in getattr(item, "fixturenames", ()):
            _unasked_starts.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _unasked_starts:
        terminalreporter.section("started the Prefect server without asking for prefect_server")
        for nodeid in _unasked_starts:
            terminalreporter.write_line(nodeid)
    if len(_file_seconds) < 2:
        return
    total = sum(_file_seconds.values())
    terminalreporter.section("seconds per test file (slowest 20)")
    for path, seconds in sorted(_file_seconds.items(), key=lambda kv: -kv[1])[:20]:
        terminalreporter.write_line(f"{seconds:8.1f} s {100 * seconds / total:5.1f} %  {path}")
    terminalreporter.write_line(f"{total:8.1f} s in all, {len(_file_seconds)} files")


def pytest_sessionfinish(session: pytest.Session) -> None:
    left = testprocs.end_run(RUN, _basetemp[0] if _basetemp else None)
    if left:
        print(f"\nended {len(left)} process(es) the tests left running: {sorted(left)}")


@pytest.fixture(scope="session", autouse=True)
def wsjobs_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Settings of the run (cheap: no server): a temporary home, the test inventory."""
    _basetemp.append(tmp_path_factory.getbasetemp())
    home = tmp_path_factory.mktemp("wsjobs-home")
    _session_home.append(home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.update(
        WSJOBS_HOME=str(home),
        WSJOBS_INVENTORY=str(DATA / "inventory.yaml"),
        WSJOBS_ACTIONS=str(DATA / "actions"),
        WSJOBS_SERVER_PORT=str(free_port()),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_TO_API_BATCH_INTERVAL="0.3",
        # No watchdog beside the tests: it would race the tests that sweep themselves.
        # tests/test_server.py runs a managed server of its own with its companions.
        WSJOBS_COMPANIONS="",
        # Pre-create schedule runs up to 400 days ahead (default 100), so a test can see a
        # cron schedule's runs across a DST change whatever today's date is.
        PREFECT_SERVER_SERVICES_SCHEDULER_MAX_SCHEDULED_TIME="P400D",
    )
    yield {"home": str(home)}
    from workspaces_jobs import server

    server.stop()  # started by prefect_server, or by a test that reached the API anyway


@pytest.fixture(scope="session")
def prefect_server(wsjobs_env: dict[str, str]) -> str:
    """The managed Prefect server of the run; returns its API URL."""
    from workspaces_jobs import server

    return server.ensure_api()


@pytest.fixture(scope="session")
def api_url(prefect_server: str) -> str:
    return prefect_server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, through Playwright) for one module's web tests.

    Per module, as each module had its own before: one Chromium open across modules was
    not tried (Playwright's sync API runs its own event loop while it is open)."""
    from webauth import chromium  # imports the web app: only for the tests that use it

    with chromium() as browser:
        yield browser
