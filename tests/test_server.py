"""The managed server's own life: identity of its processes, its port, its companions.

These tests use a second managed server in its own ``WSJOBS_HOME`` (with its companions
on, unlike the session's server) and drive it through real ``wsjobs`` processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workspaces_jobs import procs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def home_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose data folder is ``home`` (no API of the session)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_API_") and k not in ("PREFECT_UI_URL", "WSJOBS_COMPANIONS")
    }
    env.update(WSJOBS_HOME=str(home), **extra)
    return env


def wsjobs(
    *args: str, env: dict[str, str], timeout: float = 400
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def state_of(home: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((home / "prefect" / "server.json").read_text())


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process whose PID ends up in a stale server.json."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("form", ["older file without identity", "identity does not match"])
def test_stale_state_never_signals_another_process(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], form: str
) -> None:
    (tmp_path / "prefect").mkdir()
    data: dict[str, object] = {"pid": sleeper.pid, "port": 1}
    if form == "identity does not match":
        data["server"] = {"pid": sleeper.pid, "started": "1", "argv": ["python", "-m", "prefect"]}
    (tmp_path / "prefect" / "server.json").write_text(json.dumps(data))
    env = home_env(tmp_path)

    status = wsjobs("server", "status", "--json", env=env, timeout=30)
    assert json.loads(status.stdout)["running"] is False  # not mistaken for the server
    started = time.monotonic()
    out = wsjobs("server", "stop", env=env, timeout=30)
    assert time.monotonic() - started < 20  # no wait for a server that is not there
    assert out.returncode == 0 and out.stdout.strip() == "not running"
    notice = out.stderr.strip().splitlines()
    assert len(notice) == 1 and f"pid {sleeper.pid}" in notice[0] and "left" in notice[0]
    assert sleeper.poll() is None  # the unrelated process still runs
    assert state_of(tmp_path) == {"pid": None, "port": 1, "server": None, "companions": {}}


def test_process_identity_is_pid_start_time_and_command_line(
    sleeper: subprocess.Popen[bytes],
) -> None:
    rec = procs.record(sleeper, ["sleep", "300"])
    assert procs.is_running(rec)
    assert not procs.is_running(procs.ProcessRecord(rec.pid, rec.started, ("sleep", "301")))
    assert not procs.is_running(procs.ProcessRecord(rec.pid, "1", rec.argv))
    sleeper.send_signal(signal.SIGKILL)
    sleeper.wait()
    assert not procs.is_running(rec)
    assert procs.stop_group(rec)  # gone: nothing to signal


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A managed server of its own, companions on, started through a stale server.json
    that names an unrelated process and the port to use."""
    home = tmp_path_factory.mktemp("own-server")
    port = free_port()
    unrelated = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (home / "prefect").mkdir()
    (home / "prefect" / "server.json").write_text(json.dumps({"pid": unrelated.pid, "port": port}))
    env = home_env(home, WSJOBS_SERVER_PORT=str(free_port()))
    try:
        out = wsjobs("server", "start", env=env)
        assert out.returncode == 0, out.stderr
        assert f"127.0.0.1:{port}" in out.stdout  # the recorded port, not the setting
        assert f"pid {unrelated.pid}" in out.stderr and unrelated.poll() is None
        yield home, env
    finally:
        state = state_of(home)
        records = [procs.ProcessRecord.from_dict(state["server"])] + [
            procs.ProcessRecord.from_dict(r) for r in state["companions"].values()
        ]
        stop = wsjobs("server", "stop", env=env)
        unrelated.kill()
        unrelated.wait()
        assert stop.returncode == 0, stop.stderr
        assert not [r for r in records if r is None or procs.is_running(r)]  # all stopped


@pytest.mark.slow
def test_companions_run_with_the_server_and_stop_with_it(
    own_server: tuple[Path, dict[str, str]],
) -> None:
    home, env = own_server
    data = json.loads(wsjobs("server", "status", "--json", env=env).stdout)
    assert data["running"]
    assert [c["name"] for c in data["companions"]] == ["watchdog", "worker", "history-sync"]
    worker = procs.ProcessRecord.from_dict(state_of(home)["companions"]["worker"])
    assert worker is not None and procs.is_running(worker)  # the managed worker (#16)
    assert "worker: running (pid" in wsjobs("server", "status", env=env).stdout
    watchdog = procs.ProcessRecord.from_dict(state_of(home)["companions"]["watchdog"])
    assert watchdog is not None and procs.is_running(watchdog)
    assert data["companions"][0]["pid"] == watchdog.pid
    assert "watchdog: running (pid" in wsjobs("server", "status", env=env).stdout

    os.kill(watchdog.pid, signal.SIGKILL)  # a companion that died is started again
    until(lambda: not procs.is_running(watchdog), what="watchdog gone")
    assert wsjobs("watchdog", "--once", "--json", env=env).returncode == 0  # needs the API
    again = procs.ProcessRecord.from_dict(state_of(home)["companions"]["watchdog"])
    assert again is not None and again.pid != watchdog.pid and procs.is_running(again)
    assert state_of(home)["server"]["pid"] == data["pid"]  # the server itself was reused


@pytest.mark.slow
def test_history_sync_companion_keeps_the_history_current(
    own_server: tuple[Path, dict[str, str]],
) -> None:
    """The history-sync companion syncs in the background: the history appears and its
    sync_state records a finished pass, with no command syncing in the foreground."""
    from workspaces_jobs.reporting.freshness import last_synced
    from workspaces_jobs.reporting.store import open_store

    home, _env = own_server
    catalog = home / "history.ducklake"
    until(catalog.exists, timeout=180, what="the companion's first sync")

    def synced() -> bool:
        with open_store(catalog, read_only=True) as con:
            return last_synced(con) is not None

    until(synced, timeout=180, what="a finished background sync pass")


def until(check, timeout: float = 30, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# --- crash survival ---------------------------------------------------------------------------


def run_no_wait(env: dict[str, str], action: str, *params: str) -> str:
    args = ["run", action, "--devices", "t1", "--no-wait", "--json"]
    for param in params:
        args += ["--param", param]
    out = wsjobs(*args, env=env)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["id"])


def wait_for_line(home: Path, job_id: str, line: str) -> None:
    log = home / "executor-logs" / f"{job_id}.log"
    until(
        lambda: log.exists() and f"| {line}\n" in log.read_text(errors="replace"),
        timeout=240,
        what=f"{line!r} in the executor's output",
    )


def kill_server(home: Path) -> dict:  # type: ignore[type-arg]
    before = state_of(home)
    os.kill(before["server"]["pid"], signal.SIGKILL)
    return before


def final_job(env: dict[str, str], job_id: str, timeout: float = 420) -> dict:  # type: ignore[type-arg]
    def read() -> dict | None:  # type: ignore[type-arg]
        out = wsjobs("show", job_id, "--json", env=env)
        if out.returncode != 0:
            return None
        data = json.loads(out.stdout)
        return data if data["status"] not in ("Pending", "In progress") else None

    return until(read, timeout=timeout, what=f"job {job_id} to end")  # type: ignore[no-any-return]


def numbered(job: dict, prefix: str = "line ") -> list[int]:  # type: ignore[type-arg]
    return [int(m[len(prefix) :]) for m in messages(job) if m.startswith(prefix)]


def messages(job: dict) -> list[str]:  # type: ignore[type-arg]
    return [str(line["message"]) for line in job["logs"]]


@pytest.mark.slow
def test_a_job_survives_kill_9_of_the_server(own_server: tuple[Path, dict[str, str]]) -> None:
    home, env = own_server
    job_id = run_no_wait(env, "steady", "lines=160")
    wait_for_line(home, job_id, "line 10")
    before = kill_server(home)
    watchdog_pid = before["companions"]["watchdog"]["pid"]

    # Nobody runs a command: the watchdog companion starts the server again, same port.
    def revived() -> bool:
        now = state_of(home)
        rec = procs.ProcessRecord.from_dict(now["server"])
        return rec is not None and rec.pid != before["pid"] and procs.is_running(rec)

    until(revived, timeout=300, what="the watchdog to restart the server")
    watchdog_log = home / "prefect" / "watchdog.log"
    until(lambda: "started it again" in watchdog_log.read_text(), timeout=300, what="healthy")
    assert state_of(home)["port"] == before["port"]
    assert state_of(home)["companions"]["watchdog"]["pid"] == watchdog_pid  # it survived

    job = final_job(env, job_id)
    assert (job["status"], job["reason"]) == ("Completed", None)
    assert [(d["device"], d["status"]) for d in job["devices"]] == [("t1", "Completed")]
    assert numbered(job) == list(range(1, 161))  # every line, once, in order: none lost
    assert "counted 160" in messages(job)
    assert not [m for m in messages(job) if "were lost" in m]


@pytest.mark.slow
def test_lines_beyond_the_retry_limit_are_marked_lost(
    own_server: tuple[Path, dict[str, str]],
) -> None:
    home, env = own_server
    patient = {**env, "WSJOBS_API_RETRY_TIMEOUT": "3"}  # the executor gives up after 3 s
    job_id = run_no_wait(patient, "steady", "lines=600")
    wait_for_line(home, job_id, "line 10")
    before = kill_server(home)
    time.sleep(10)  # well past the executor's limit
    started = wsjobs("server", "start", env=env)  # the watchdog may be starting it too
    assert started.returncode == 0, started.stderr
    assert state_of(home)["port"] == before["port"]

    job = final_job(env, job_id)
    assert job["status"] == "Completed"  # the server was back before the step ended
    got = numbered(job)
    assert len(got) == len(set(got)) and set(got) <= set(range(1, 601))
    missing = sorted(set(range(1, 601)) - set(got))
    markers = [m for m in messages(job) if "were lost" in m]
    assert missing and len(markers) == 1, (len(missing), markers)
    assert missing == list(range(missing[0], missing[-1] + 1))  # one gap, as marked
    lost = int(markers[0].split()[0])
    assert lost >= len(missing)  # every missing line is counted (Prefect's own lines too)
    assert "WSJOBS_API_RETRY_TIMEOUT (3 s)" in markers[0]
    assert messages(job).index(markers[0]) < messages(job).index(f"line {missing[-1] + 1}")


# --- the loopback guard, in process (the live server: tests/test_server_security.py) -----------


def _guarded_status(headers: list[tuple[bytes, bytes]], kind: str = "http") -> object:
    import asyncio

    from workspaces_jobs.serverapp import LoopbackGuard

    sent: list[dict] = []  # type: ignore[type-arg]

    async def app(scope: object, receive: object, send: object) -> None:
        sent.append({"type": "reached the app"})

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    scope = {"type": kind, "method": "GET", "path": "/api/health", "headers": headers}
    asyncio.run(LoopbackGuard(app, 4200)(scope, receive, send))  # type: ignore[arg-type]
    first = sent[0]
    return first.get("status") or first.get("code") or first["type"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"host", b"127.0.0.1:4200")], "reached the app"),
        ([(b"host", b"LOCALHOST:4200"), (b"origin", b"http://localhost:4200")], "reached the app"),
        ([], 400),
        ([(b"host", b"127.0.0.1:4200"), (b"host", b"evil.example:4200")], 400),
        ([(b"host", b"evil.example:4200"), (b"host", b"127.0.0.1:4200")], 400),
        (
            [
                (b"host", b"127.0.0.1:4200"),
                (b"origin", b"http://127.0.0.1:4200"),
                (b"origin", b"null"),
            ],
            403,
        ),
        ([(b"host", b"127.0.0.1:4200"), (b"origin", b"null")], 403),
    ],
)
def test_the_guard_wants_one_own_host_and_at_most_one_own_origin(
    headers: list[tuple[bytes, bytes]], expected: object
) -> None:
    assert _guarded_status(headers) == expected


def test_the_guard_closes_a_foreign_websocket_before_accepting_it() -> None:
    headers = [(b"host", b"127.0.0.1:4200"), (b"origin", b"http://127.0.0.1:8000")]
    assert _guarded_status(headers, kind="websocket") == 1008
