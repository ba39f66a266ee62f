"""The ``ssh`` transport against a real OpenSSH server on 127.0.0.1 (see tests/sshd.py).

Jobs run through the real executor and Prefect API with a temporary inventory of SSH
devices that all point at the test server; transport-level tests (job kill, a client
that dies) call the process's SSH transport directly. What every transport must do
(exit codes, streams, limits, terminate/open/close) is tests/test_transports.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sshd
import yaml
from jobhelpers import run, step_lines

from workspaces_jobs.catalog import CatalogError, Device, load_inventory
from workspaces_jobs.jobs import read_job
from workspaces_jobs.status import JobStatus
from workspaces_jobs.tasks import transports

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshd.Sshd]:
    reason = sshd.unavailable_reason()
    if reason:
        pytest.fail(reason)  # never a skip: a green run without sshd would test nothing SSH
    srv = sshd.start(tmp_path_factory.mktemp("sshd"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections but never speaks SSH."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield int(sock.getsockname()[1])
    sock.close()


@pytest.fixture(scope="module")
def inventory(
    server: sshd.Sshd, silent_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("ssh-inventory")
    other_key_pub = sshd.keygen(folder / "other_host", "another-host")
    wrong_known = folder / "wrong_known_hosts"
    wrong_known.write_text(f"[127.0.0.1]:{server.port} {' '.join(other_key_pub.split()[:2])}\n")
    (folder / "empty_known_hosts").write_text("")
    sshd.keygen(folder / "stranger", "not-authorized")

    def dev(name: str, **over: Any) -> dict[str, Any]:
        entry = {
            "name": name,
            "transport": "ssh",
            "host": "127.0.0.1",
            "port": server.port,
            "user": server.user,
            "key_file": str(server.client_key),
            "known_hosts": str(server.known_hosts),
            "connect_timeout": 5,
            "tags": ["ssh"],
        }
        entry.update(over)
        return entry

    devices = [
        dev("s1"),
        dev("s2"),
        dev("j1", jump_host=f"{server.user}@127.0.0.1:{server.port}"),
        dev("badkey", known_hosts=str(wrong_known)),
        dev("unknown", known_hosts=str(folder / "empty_known_hosts")),
        dev("tofu", known_hosts=str(folder / "tofu" / "known_hosts"), trust_on_first_use=True),
        dev("closed", port=sshd.free_port()),
        dev("nodns", host="no-such-host.invalid"),
        dev("authfail", key_file=str(folder / "stranger")),
        dev("silent", port=silent_port, connect_timeout=1),
        *(dev(f"f{i:02d}", tags=["fleet"]) for i in range(1, 51)),
        {"name": "t1", "transport": "local"},
    ]
    path = folder / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}))
    return path


@pytest.fixture
def use_inventory(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The executor subprocess inherits os.environ when the job is submitted.
    monkeypatch.setenv("WSJOBS_INVENTORY", str(inventory))
    return inventory


def remote_pids(marker: str) -> list[str]:
    """Processes on the (local) SSH host whose command line contains ``marker``.

    Reads /proc like ``ps -eo pid,args`` would (procps may be missing on CI images).
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in args:
            found.append(f"{entry.name} {args}")
    return found


def wait_gone(marker: str, seconds: float = 8.0) -> list[str]:
    """Poll ``ps`` until nothing with ``marker`` runs (the KILL comes after a grace)."""
    deadline = time.monotonic() + seconds
    left = remote_pids(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = remote_pids(marker)
    return left


def run_settled(action: str, target: list[str], **kwargs: Any) -> Any:
    """Run a job, then re-read it until the final-status hook line has arrived.

    Log lines reach the API in batches; the hook's "Job status: <final>" line is written
    after every step line, so once it is there all of them are.
    """
    job = run(action, target, **kwargs)
    for _ in range(50):
        if any(line.message.startswith(f"Job status: {job.status}") for line in job.logs):
            return job
        time.sleep(0.3)
        job = read_job(job.id)
    raise AssertionError(f"job {job.id}: its final status line never reached the API")


def sys_lines(job: Any, device: str) -> str:
    return "\n".join(
        line.message for line in job.logs if line.device == device and line.stream == "sys"
    )


# --------------------------------------------------------------------------- jobs


def test_steps_over_ssh_one_connection_per_device(
    server: sshd.Sshd, use_inventory: Path, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned"
    value = f"$(touch {pwned}); rm -rf x 'q\" `id`"
    before = server.accepted()
    job = run_settled("ssh-steps", ["s1", "s2", "j1", "t1"], params={"value": value})
    assert job.status == JobStatus.COMPLETED.value, job
    for device in ("s1", "s2", "j1"):
        first = step_lines(job, device, "first")
        second = step_lines(job, device, "second")
        conn = [line for line in first if line.startswith("conn=")]
        assert conn and conn[0].startswith("conn=127.0.0.1 "), first
        assert conn == [line for line in second if line.startswith("conn=")]  # one connection
        assert f"env={value}" in first
        assert f"tpl={value}" in second
        assert step_lines(job, device, "third") == [
            f"device={device} step=third bash={step_lines(job, device, 'third')[0][-1]}"
        ]
        err = [
            line
            for line in job.logs
            if line.device == device and line.step == "first" and line.stream == "err"
        ]
        assert [line.message for line in err] == ["to stderr"]
    assert not pwned.exists()
    # s1, s2, and j1 through its jump host (two logins): 3 steps each, 4 connections.
    assert server.accepted() - before == 4


def test_unreachable_and_untrusted_devices_fail_alone(
    server: sshd.Sshd, use_inventory: Path, inventory: Path
) -> None:
    failing = ["badkey", "unknown", "closed", "nodns", "authfail", "silent"]
    job = run_settled("ok", ["s1", "tofu", *failing])
    assert job.status == JobStatus.COMPLETED_WITH_ERRORS.value
    by_device = {d.device: d.status for d in job.devices}
    assert by_device["s1"] == JobStatus.COMPLETED.value
    assert by_device["tofu"] == JobStatus.COMPLETED.value
    assert all(by_device[d] == JobStatus.ERROR.value for d in failing), by_device
    port = server.port
    expected = {
        "badkey": "does NOT match known_hosts",
        "unknown": f"is not in known_hosts {inventory.parent / 'empty_known_hosts'}: "
        f"add it with `ssh-keyscan -p {port} 127.0.0.1",
        "closed": "connection refused",
        "nodns": "cannot resolve host name 'no-such-host.invalid'",
        "authfail": f"authentication failed for {server.user}@127.0.0.1:{port}",
        "silent": "within the connect_timeout",
    }
    for device, reason in expected.items():
        text = sys_lines(job, device)
        assert "exit code 255" in text and reason in text, (device, text)
        assert step_lines(job, device, "first") == []
    # Trust on first use accepted the unknown key, recorded it, and said so.
    recorded = (inventory.parent / "tofu" / "known_hosts").read_text()
    assert server.host_key_line in recorded
    assert "trust_on_first_use: accepted the new host key" in sys_lines(job, "tofu")
    assert step_lines(job, "tofu", "second") == ["second on tofu"]


def test_every_device_unreachable_is_error(use_inventory: Path) -> None:
    job = run_settled("ok", ["closed", "nodns"])
    assert job.status == JobStatus.ERROR.value
    assert "connection refused" in sys_lines(job, "closed")


def test_step_timeout_kills_the_remote_process_tree(use_inventory: Path) -> None:
    marker = f"wsjobs-mark-{uuid.uuid4().hex}"
    job = run_settled("ssh-hang", ["s1"], params={"marker": marker})
    assert job.status == JobStatus.ERROR.value
    assert step_lines(job, "s1", "hang") == ["started"]
    assert "timed out after 2 s" in sys_lines(job, "s1")
    assert wait_gone(marker) == []


def test_wsjobs_kill_stops_remote_steps(use_inventory: Path) -> None:
    from workspaces_jobs.jobs import submit_job
    from workspaces_jobs.lifecycle import kill_job

    marker = f"wsjobs-mark-{uuid.uuid4().hex}"
    job_id = submit_job("ssh-wait", target=["s1", "s2"], params={"marker": marker})
    deadline = time.monotonic() + 60
    # Both devices' scripts (shell + background subshell each) are running on the host.
    while len(remote_pids(marker)) < 4 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len(remote_pids(marker)) >= 4
    result = kill_job(job_id, by="tester")
    assert result.status == JobStatus.CANCELED.value, result
    assert wait_gone(marker) == []


@pytest.mark.slow
def test_fifty_devices_bounded_concurrency(
    server: sshd.Sshd, use_inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSJOBS_MAX_PARALLEL", "8")
    stamps = tmp_path / "stamps.log"
    before = server.accepted()
    job = run_settled("ssh-fleet", ["tag:fleet"], params={"log": str(stamps)})
    assert job.status == JobStatus.COMPLETED.value, job
    assert len(job.devices) == 50

    # stdout only: the login user's shell start-up files may print to stderr (on this
    # image root's bashrc runs `pyenv rehash`, which complains when 50 run at once).
    def stdout(device: str) -> list[str]:
        return [
            line.message
            for line in job.logs
            if line.device == device and line.step == "stamp" and line.stream == "out"
        ]

    wrong = {
        d.device: stdout(d.device)
        for d in job.devices
        if stdout(d.device) != [f"stamped {d.device}"]
    }
    assert not wrong, (wrong, len(job.logs))
    events = sorted(
        (float(ts), kind == "start")
        for ts, kind, _ in (line.split() for line in stamps.read_text().splitlines())
    )
    assert len(events) == 100
    running = peak = 0
    for _, is_start in events:
        running += 1 if is_start else -1
        peak = max(peak, running)
    assert 2 <= peak <= 8, peak
    assert server.accepted() - before == 50  # one connection per device


# --------------------------------------------------------------------------- transport


def _device(server: sshd.Sshd, name: str = "direct") -> Device:
    return Device(
        name=name,
        transport="ssh",
        host="127.0.0.1",
        port=server.port,
        user=server.user,
        key_file=str(server.client_key),
        known_hosts=str(server.known_hosts),
    )


def _hang_script(marker: str) -> str:
    return f": {marker}\n(sleep 300; echo never) &\necho started\nsleep 301\n"


def test_job_kill_stops_running_remote_steps(server: sshd.Sshd) -> None:
    marker = f"wsjobs-mark-{uuid.uuid4().hex}"
    job_id = f"kill-{marker}"
    started = threading.Event()
    results: list[Any] = []

    def on_line(stream: str, text: str) -> None:
        if text == "started":
            started.set()

    def step() -> None:
        results.append(
            transports.TRANSPORTS.get("ssh").run(
                _device(server),
                script=_hang_script(marker),
                shell="/bin/sh",
                env={"WSJOBS_JOB_ID": job_id},
                on_line=on_line,
                timeout=None,
                inactivity=None,
            )
        )

    thread = threading.Thread(target=step)
    thread.start()
    try:
        assert started.wait(15)
        assert remote_pids(marker)
        assert transports.terminate_all(refuse_new=True) == 1
        thread.join(10)
        assert results and results[0].exit_code == -15
        assert results[0].error == "stopped: the job was stopped"
        assert wait_gone(marker) == []
        refused = transports.TRANSPORTS.get("ssh").run(
            _device(server),
            script="echo must-not-run",
            shell="/bin/sh",
            env={"WSJOBS_JOB_ID": job_id},
            on_line=lambda s, t: results.append(t),
            timeout=None,
            inactivity=None,
        )
        assert refused.exit_code == transports.STOPPED_EXIT_CODE and "must-not-run" not in results
    finally:
        transports.allow_new()
        transports.close_job(job_id)


def test_remote_tree_dies_with_a_killed_worker(server: sshd.Sshd, tmp_path: Path) -> None:
    """A worker that is SIGKILLed runs no cleanup: the dropped connection must suffice."""
    marker = f"wsjobs-mark-{uuid.uuid4().hex}"
    dev = _device(server)
    code = textwrap.dedent(
        f"""
        import sys
        from workspaces_jobs.catalog import Device
        from workspaces_jobs.tasks.transports.ssh import SSHTransport
        dev = Device.model_validate_json({dev.model_dump_json()!r})
        def on_line(stream, text):
            print(text, flush=True)
        SSHTransport().run(dev, script={_hang_script(marker)!r}, shell="/bin/sh",
                           env={{"WSJOBS_JOB_ID": "dead"}}, on_line=on_line,
                           timeout=None, inactivity=None)
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "started"
        assert [p for p in remote_pids(marker) if not p.startswith(f"{worker.pid} ")]
    finally:
        worker.kill()
        worker.wait()
    assert wait_gone(marker) == []


def test_inventory_rejects_ssh_device_without_host(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("devices:\n  - {name: r1, transport: ssh}\n")
    with pytest.raises(CatalogError, match="uses transport ssh: give it a host"):
        load_inventory(path)
