"""The web view beside the history's other writers (issue 17): while the managed server's
history-sync companion runs, the web view's own background loop stands down (one writer);
when the companion is gone, the loop syncs again. And the web view's long-lived
connection keeps reading while other processes write, migrate and maintain the history.

The managed server's record (``server.json``) names two real processes (``sleep``) as
the server and the companion, in a home of this test's own: what ``wsjobs ui`` reads
is exactly that record, and no Prefect server is needed to decide.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from workspaces_jobs import procs, server
from workspaces_jobs.reporting.store import history_path, stale_catalog
from workspaces_jobs.web.state import (
    COMPANION_NAME,
    Syncer,
    SyncStatus,
    WebState,
    companion_keeps,
)


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


# -- a long-lived reader and another process's maintenance -------------------------------

WRITE_AND_MAINTAIN = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from workspaces_jobs.reporting import rows as R, store, synthetic
    with store.writer_lock(sys.argv[1]), store.open_store(sys.argv[1]) as con:
        cur = con.cursor()
        if sys.argv[2] == "alter":  # a schema change not followed by a flush (older code)
            cur.execute("ALTER TABLE jobs ADD COLUMN later_column VARCHAR")
        if sys.argv[2] != "maintain":
            jobs = [dict(synthetic.job_row(0), parameters="{}") for _ in range(5)]
            cur.execute("BEGIN TRANSACTION")
            R.upsert(cur, "jobs", R.to_arrow("jobs", jobs))
            cur.execute("COMMIT")
        if sys.argv[2] != "alter":
            store.maintain(con, now=datetime.now(UTC) + timedelta(days=30))
    """
)


def _other_process(path: Path, what: str) -> None:
    subprocess.run(
        [sys.executable, "-c", WRITE_AND_MAINTAIN, str(path), what], check=True, timeout=300
    )


def _jobs(state: WebState) -> int:
    with state.snapshot() as con:
        return int(con.cursor().execute("SELECT count(*) FROM jobs").fetchone()[0])


def test_a_new_history_survives_another_process_maintaining_it(tmp_path: Path) -> None:
    """Creating the history flushes what the migrations inlined, so the first maintenance
    by the sync drops nothing a reader cached."""
    path = tmp_path / "history.ducklake"
    _other_process(path, "insert")
    with WebState(path, sync_every=0) as state:
        assert _jobs(state) == 5
        _other_process(path, "insert")
        assert _jobs(state) == 10  # plain reads, no reopen needed


def test_web_view_reopens_when_maintenance_drops_what_it_cached(tmp_path: Path) -> None:
    """A history whose rows sit inlined under an older schema (a schema changed without
    a flush, as histories made before this release): the web view caches those tables,
    another process's maintenance drops them; the next page reopens the history."""
    path = tmp_path / "history.ducklake"
    _other_process(path, "insert")
    _other_process(path, "alter")  # 5 rows inlined under each of two schema versions
    with WebState(path, sync_every=0) as state:
        assert _jobs(state) == 10
        _other_process(path, "maintain")  # the sync's maintenance, in another process
        with pytest.raises(duckdb.Error) as stale:  # this connection's catalog is stale
            _jobs(state)
        assert stale_catalog(stale.value)
        assert state.retried(_jobs) == 10  # the page is served from a reopened history
        assert _jobs(state) == 10
