"""The test harness itself: a missing sshd fails loudly with what to install, every process a
run starts is ended (also those an interrupted earlier run left), ``--reverse`` reverses.
Pure: no Prefect server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import sshd
import testprocs

TESTS = Path(__file__).resolve().parent
#: This run's marker, set by conftest.py before any test starts a process.
RUN = os.environ[testprocs.MARKER]


def test_a_missing_sshd_is_a_failure_that_says_what_to_install(tmp_path: Path) -> None:
    reason = sshd.unavailable_reason(path=str(tmp_path), fallbacks=())
    assert reason is not None
    assert reason.startswith("sshd not found (looked on PATH)")
    assert "apt-get install openssh-server" in reason
    # Found on PATH when it is there (not only at one hard-coded path).
    fake = tmp_path / "sshd"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert sshd.find_sshd(path=str(tmp_path), fallbacks=()) == str(fake)
    assert sshd.find_sshd(path="/nonexistent", fallbacks=(str(fake),)) == str(fake)
    # And test_ssh.py fails (never skips) with that reason.
    source = (TESTS / "test_ssh.py").read_text(encoding="utf-8")
    assert "pytest.fail(reason)" in source and "pytest.skip" not in source


def _tree(marker: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """A shell in its own session with a background child: a server and its worker."""
    env = {**os.environ, testprocs.MARKER: marker}
    return subprocess.Popen(
        ["sh", "-c", "sleep 300 & sleep 300; wait"],
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


def _members(proc: subprocess.Popen[bytes]) -> list[int]:
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.getpgid(pid) == proc.pid:
                found.append(pid)
        except ProcessLookupError:
            pass
    return found


def _wait_children(proc: subprocess.Popen[bytes], count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        members = _members(proc)
        if len(members) >= count:
            return members
        time.sleep(0.05)
    raise AssertionError(f"process tree of {proc.pid} did not start")


def _gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(testprocs.start_time(p) is None or testprocs._zombie(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_processes_of_a_dead_run_are_reaped_and_live_runs_are_spared(tmp_path: Path) -> None:
    dead_run = "999999999:1"  # no such pid: its pytest is gone
    live_other = testprocs.run_id(1)  # init is alive: another run still going
    # "This run" is a stand-in marker: ending the real RUN here would end the session's
    # Prefect server under the tests that follow.
    this_run = f"{RUN}-stand-in"
    leftover = _tree(dead_run)
    others = _tree(live_other)
    mine = _tree(this_run)
    session = _tree(RUN)  # like the session's Prefect server: must outlive all of this
    try:
        left = _wait_children(leftover, 3)
        spared = _wait_children(others, 3) + _wait_children(session, 3)
        own = _wait_children(mine, 3)
        reaped = testprocs.reap_stale(this_run, grace=2)
        assert set(left) <= set(reaped)
        leftover.wait(timeout=10)
        assert _gone(left)
        assert all(testprocs.start_time(p) for p in spared + own)  # not touched
        # The session's end: everything of this run, and nothing of the live other run.
        ended = testprocs.end_run(this_run, grace=2)
        assert set(own) <= set(ended)
        mine.wait(timeout=10)
        assert _gone(own)
        assert all(testprocs.start_time(p) for p in spared)
    finally:
        for proc in (leftover, others, mine, session):
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()


def test_a_process_working_under_the_run_folder_is_ended_without_the_marker(
    tmp_path: Path,
) -> None:
    """Local device sandboxes: step processes get a clean environment, not the marker."""
    proc = _tree("unrelated-run", cwd=tmp_path)
    try:
        pids = _wait_children(proc, 3)
        ended = testprocs.end_run("no-such-run", basetemp=tmp_path, grace=2)
        assert set(pids) <= set(ended)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_reverse_option_reverses_the_collected_order() -> None:
    def collected(*extra: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
            + [str(TESTS / "test_status.py"), *extra],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=TESTS.parent,
        ).stdout
        return [line for line in out.splitlines() if "::" in line]

    forward = collected()
    assert len(forward) > 3
    assert collected("--reverse") == forward[::-1]
