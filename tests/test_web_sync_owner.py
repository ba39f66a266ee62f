"""One writer keeps the history current (issue 17): while the managed server's
history-sync companion runs, the web view's own background loop stands down; when the
companion is gone, the loop syncs again.

The managed server's record (``server.json``) names two real processes (``sleep``) as
the server and the companion, in a home of this test's own: what ``wsjobs ui`` reads
is exactly that record, and no Prefect server is needed to decide.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from workspaces_jobs import procs, server
from workspaces_jobs.reporting.store import history_path
from workspaces_jobs.web.state import COMPANION_NAME, Syncer, SyncStatus, companion_keeps


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WSJOBS_HOME", str(tmp_path))
    monkeypatch.delenv("WSJOBS_HISTORY", raising=False)
    monkeypatch.delenv("WSJOBS_HISTORY_CATALOG", raising=False)
    return tmp_path


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    procs_ = [subprocess.Popen(argv) for _ in range(2)]
    yield procs_
    for proc in procs_:
        proc.kill()
        proc.wait(timeout=30)


def _record(
    home: Path, server_proc: subprocess.Popen[bytes], companion: subprocess.Popen[bytes]
) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    (home / "prefect").mkdir(mode=0o700, parents=True, exist_ok=True)
    state = server._State(
        port=1,
        server=procs.record(server_proc, argv),
        companions={COMPANION_NAME: procs.record(companion, argv)},
    )
    state.save()


def test_web_loop_stands_down_while_the_companion_syncs(
    home: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    path = history_path(None)
    assert not companion_keeps(path)  # no managed server recorded: the view syncs itself
    _record(home, sleepers[0], sleepers[1])
    assert companion_keeps(path)
    assert not companion_keeps(home / "elsewhere.ducklake")  # another history: its own loop

    syncer = _Counting(path, every=0.05)
    syncer.start()
    try:
        deadline = time.monotonic() + 30
        while syncer.status.by != COMPANION_NAME and time.monotonic() < deadline:
            time.sleep(0.05)
        assert syncer.status.by == COMPANION_NAME
        time.sleep(0.3)  # several loop turns, none of them synced
        assert syncer.passes == 0

        sleepers[1].kill()  # the companion dies: the view's own loop syncs again
        sleepers[1].wait(timeout=30)
        deadline = time.monotonic() + 60
        while syncer.passes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert syncer.passes > 0
        assert syncer.status.by is None
    finally:
        syncer.stop()


class _Counting(Syncer):
    """The real loop; a pass only counts (the sync itself is tested in test_sync)."""

    passes = 0

    def run_once(self) -> SyncStatus:
        self.passes += 1
        self.status = SyncStatus(at=datetime.now(UTC))
        return self.status
