"""The ``ssh`` transport: a step is a remote process on a host reached with asyncssh.

Why it looks the way it does:

* **One event loop per process.** The step task is synchronous (a thread of Prefect's
  thread-pool task runner); asyncssh is asynchronous. A daemon thread runs the
  transport's asyncio loop (one transport per process, made by the registry), started on
  first use, and every step submits its coroutine to it. Output lines
  come back to the step's own thread through a queue, so the Prefect logger is only
  called from the task's thread and a slow log handler never stalls other devices.
* **One connection per device per job**, cached under ``(job id, device)``; steps open
  sessions on it (at most ``max_sessions`` at once). :meth:`SSHTransport.close` closes
  it when the device has no more steps, and all of the job's when the job ends. At most
  :data:`HANDSHAKES_PER_ENDPOINT` handshakes run at once per host:port, below sshd's
  default ``MaxStartups 10``, which drops surplus unauthenticated connections at random.
* **Host keys are verified** against the device's ``known_hosts`` file or
  ``~/.ssh/known_hosts``. An unknown or changed key fails the device with a message that
  says how to fix it; ``trust_on_first_use: true`` accepts and records an *unknown* key
  (never a changed one).
* **Nothing user-supplied is pasted into shell text.** The SSH command is a fixed
  bootstrap; the wrapper it reads from stdin exports each variable with a
  :func:`shlex.quote`'d value and runs the script as ``<shell> -c <quoted script>``.
  No ``AcceptEnv`` on the server is needed.
* **The remote tree dies with the step.** sshd starts every command in its own session
  (``setsid``), so the wrapper, the script and its children share a process group. A
  watcher in that group waits for EOF on stdin: the transport sends EOF to stop a step
  (timeout, inactivity, job kill), and sshd closes stdin when the connection drops (the
  worker died), so the watcher sends ``TERM`` to the group, then ``KILL``. When the script
  ends normally the wrapper prints its exit code on a control line (a per-step random
  marker, never logged) and ``KILL``s the group, like the local transport does.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import secrets
import shlex
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from workspaces_jobs.catalog import Device
from workspaces_jobs.runmeta import STREAM_ERR, STREAM_OUT, STREAM_SYS
from workspaces_jobs.tasks.lines import LineSplitter
from workspaces_jobs.tasks.transports import STOPPED_EXIT_CODE, LineSink, StepResult

#: Seconds between TERM and KILL when a remote step is stopped.
KILL_GRACE = 2.0
#: Extra seconds to wait for the channel to close after the KILL before giving up on it.
CLOSE_SLACK = 3.0
#: Concurrent SSH handshakes per host:port (sshd's default MaxStartups starts dropping at 10).
HANDSHAKES_PER_ENDPOINT = 8
#: Exit code reported when the step could not run at all (as the ``ssh`` client does).
CONNECT_FAILED = 255

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- connections


class ConnectFailed(Exception):
    """The device could not be reached; the message is the reason shown in the step log."""


@dataclass
class _Link:
    conn: asyncssh.SSHClientConnection
    tunnel: asyncssh.SSHClientConnection | None
    sessions: asyncio.Semaphore

    def close(self) -> None:
        self.conn.close()
        if self.tunnel is not None:
            self.tunnel.close()


#: known_hosts files are shared by every connection of the process: one writer at a time.
_known_hosts_lock = threading.Lock()


def known_hosts_path(device: Device) -> Path:
    if device.known_hosts:
        return Path(device.known_hosts).expanduser()
    return Path.home() / ".ssh" / "known_hosts"


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


class _HostKeyCheck(asyncssh.SSHClient):
    """Decides about host keys not found in known_hosts, and remembers why it refused."""

    def __init__(self, path: Path, known: asyncssh.SSHKnownHosts, tofu: bool) -> None:
        self.path = path
        self.known = known
        self.tofu = tofu
        self.offered: asyncssh.SSHKey | None = None
        self.changed = False
        self.notes: list[str] = []

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.offered = key
        self.changed = bool(self.known.match(host, addr, port)[0])
        if self.changed or not self.tofu:
            return False
        line = f"{_host_pattern(host, port)} {key.export_public_key('openssh').decode().strip()}"
        with _known_hosts_lock:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            existing = self.path.read_text() if self.path.exists() else ""
            if line not in existing.splitlines():
                with self.path.open("a") as f:
                    f.write(("" if not existing or existing.endswith("\n") else "\n") + line + "\n")
        self.notes.append(
            f"trust_on_first_use: accepted the new host key {_fingerprint(key)} for "
            f"{host}:{port} and recorded it in {self.path}"
        )
        return True

    def refusal(self, host: str, port: int) -> str:
        fp = f" ({_fingerprint(self.offered)})" if self.offered else ""
        if self.changed:
            return (
                f"host key for {host}:{port}{fp} does NOT match known_hosts {self.path}: "
                "the host was reinstalled or the connection is intercepted; if the change is "
                f"expected, run `ssh-keygen -R '{_host_pattern(host, port)}' -f {self.path}` "
                "and add the new key"
            )
        return (
            f"host key for {host}:{port}{fp} is not in known_hosts {self.path}: add it with "
            f"`ssh-keyscan -p {port} {host} >> {self.path}` (check the fingerprint) "
            "or set trust_on_first_use: true"
        )


def _parse_jump(spec: str, default_user: str | None) -> tuple[str | None, str, int]:
    """``[user@]host[:port]`` → (user, host, port)."""
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, 22
    if hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
        port = int(port_text)
    return (user or default_user), host.strip("[]"), port


def _describe(exc: BaseException, user: str | None, host: str, port: int, key: str) -> str:
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name {host!r}: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return f"no SSH answer from {where} within the connect_timeout"
    if isinstance(exc, asyncssh.PermissionDenied):
        return (
            f"authentication failed for {user or 'the current user'}@{where}: the server "
            f"accepted none of the keys offered ({key}); check user and key_file"
        )
    if isinstance(exc, asyncssh.KeyImportError | asyncssh.KeyEncryptionError):
        return f"cannot load {key}: {exc} (use the SSH agent for passphrase-protected keys)"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"SSH connection to {where} failed: {exc.reason}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (is sshd running on that port?)"
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        return f"cannot connect to {where}: {reason}"
    return f"SSH connection to {where} failed: {exc}"


async def _open_one(
    device: Device,
    *,
    user: str | None,
    host: str,
    port: int,
    tunnel: asyncssh.SSHClientConnection | None,
    notes: list[str],
    handshakes: dict[tuple[str, int], asyncio.Semaphore],
) -> asyncssh.SSHClientConnection:
    path = known_hosts_path(device)
    try:
        known = asyncssh.read_known_hosts(str(path)) if path.exists() else None
    except (OSError, ValueError) as exc:
        raise ConnectFailed(f"cannot read known_hosts {path}: {exc}") from exc
    known = known or asyncssh.import_known_hosts("")
    key_desc = f"key_file {device.key_file}" if device.key_file else "the SSH agent and ~/.ssh/id_*"
    options: dict[str, Any] = {}
    if device.key_file:
        key_path = Path(device.key_file).expanduser()
        if not key_path.is_file():
            raise ConnectFailed(f"key_file {key_path} does not exist")
        options.update(client_keys=[str(key_path)], agent_path=None)
    checker = _HostKeyCheck(path, known, device.trust_on_first_use)
    slot = handshakes.setdefault((host, port), asyncio.Semaphore(HANDSHAKES_PER_ENDPOINT))
    for attempt in range(3):
        try:
            async with slot:
                conn = await asyncssh.connect(
                    host,
                    port,
                    tunnel=tunnel or (),
                    username=user or (),
                    known_hosts=known,
                    client_factory=lambda: checker,
                    config=None,  # the inventory is the single source of truth
                    connect_timeout=device.connect_timeout,
                    login_timeout=device.connect_timeout,
                    keepalive_interval=30,
                    keepalive_count_max=3,
                    **options,
                )
            notes.extend(checker.notes)
            return conn
        except asyncssh.HostKeyNotVerifiable as exc:
            raise ConnectFailed(checker.refusal(host, port)) from exc
        except (asyncssh.ConnectionLost, ConnectionResetError) as exc:
            # An overloaded sshd (MaxStartups) resets handshakes: try again, briefly.
            if attempt == 2:
                raise ConnectFailed(_describe(exc, user, host, port, key_desc)) from exc
            await asyncio.sleep(0.2 * (attempt + 1))
        except (TimeoutError, OSError, asyncssh.Error, ValueError) as exc:
            raise ConnectFailed(_describe(exc, user, host, port, key_desc)) from exc
    raise AssertionError("unreachable")


async def _open_link(
    device: Device, handshakes: dict[tuple[str, int], asyncio.Semaphore]
) -> tuple[_Link, list[str]]:
    if not device.host:
        raise ConnectFailed(f"device {device.name!r} has transport ssh but no host")
    notes: list[str] = []
    tunnel = None
    if device.jump_host:
        try:
            juser, jhost, jport = _parse_jump(device.jump_host, device.user)
        except ValueError as exc:
            raise ConnectFailed(f"jump_host {device.jump_host!r}: use user@host:port") from exc
        try:
            tunnel = await _open_one(
                device,
                user=juser,
                host=jhost,
                port=jport,
                tunnel=None,
                notes=notes,
                handshakes=handshakes,
            )
        except ConnectFailed as exc:
            raise ConnectFailed(f"jump host {device.jump_host}: {exc}") from exc
    try:
        conn = await _open_one(
            device,
            user=device.user,
            host=device.host,
            port=device.port,
            tunnel=tunnel,
            notes=notes,
            handshakes=handshakes,
        )
    except BaseException:
        if tunnel is not None:
            tunnel.close()
        raise
    return _Link(conn, tunnel, asyncio.Semaphore(device.max_sessions)), notes


# --------------------------------------------------------------------------- one step


def _wrapper(
    *, script: str, shell: str, env: Mapping[str, str], exit_marker: str, end_marker: str
) -> bytes:
    """The text the bootstrap reads from stdin: every value shell-quoted, never raw."""
    lines = [
        # fd 3 keeps the SSH stdin for the watcher; the script gets /dev/null.
        "exec 3<&0 0</dev/null",
        "(trap '' TERM INT HUP; cat <&3 >/dev/null 2>&1; kill -s TERM 0;"
        f" sleep {KILL_GRACE:g}; kill -s KILL 0) >/dev/null 2>&1 &",
    ]
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"environment variable name {name!r} is not valid")
        lines.append(f"export {name}={shlex.quote(value)}")
    lines += [
        f"{shlex.quote(shell)} -c {shlex.quote(script)} 3<&-",
        "wsjobs_rc=$?",
        f"printf '%s %s\\n' {exit_marker} \"$wsjobs_rc\"",
        "kill -s KILL 0",
    ]
    text = "\n".join(lines)
    if end_marker in text:  # a 128-bit random marker: cannot happen by accident
        raise ValueError("step text collides with the end marker")
    return (text + "\n" + end_marker + "\n").encode()


def _bootstrap(end_marker: str) -> str:
    """The fixed SSH command: read the wrapper up to the end marker, then run it.

    ``read`` consumes stdin one line at a time, so everything after the marker stays
    in the pipe for the watcher. No user data is in this text.
    """
    return (
        "exec /bin/sh -c 'w=; while IFS= read -r l; do "
        f'if [ "$l" = {end_marker} ]; then eval "$w"; exit 125; fi; '
        'w="$w$l\n"; done; exit 125\''
    )


class _StepSession(asyncssh.SSHClientSession[bytes]):
    def __init__(self, emit: Callable[[str, str], None], exit_marker: str) -> None:
        self.exit_marker = exit_marker
        self.exit_code: int | None = None  # from the wrapper's control line
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.lost: Exception | None = None
        self.closed = asyncio.Event()
        self.wake = asyncio.Event()
        self.stop_requested = False
        self.last_output = asyncio.get_running_loop().time()
        self._out = LineSplitter(self._stdout_line)
        self._err = LineSplitter(lambda text: emit(STREAM_ERR, text))
        self._emit = emit

    def _stdout_line(self, text: str) -> None:
        if self.exit_marker in text:
            before, _, rest = text.partition(self.exit_marker)
            if before:
                self._emit(STREAM_OUT, before)
            try:
                self.exit_code = int(rest.split()[0])
            except (IndexError, ValueError):
                pass
            return
        self._emit(STREAM_OUT, text)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.last_output = asyncio.get_running_loop().time()
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self._err.feed(data)
        else:
            self._out.feed(data)

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc
        self._out.close()
        self._err.close()
        self.closed.set()
        self.wake.set()

    def result_code(self) -> int:
        if self.exit_code is not None:
            return self.exit_code
        if self.exit_status is not None:
            return self.exit_status
        if self.exit_signal:
            try:
                return -int(signal.Signals[f"SIG{self.exit_signal}"])
            except KeyError:
                return CONNECT_FAILED
        return CONNECT_FAILED


async def _stop(chan: asyncssh.SSHClientChannel[bytes], session: _StepSession) -> None:
    """EOF on stdin: the remote watcher TERMs the process group, then KILLs it."""
    if not session.closed.is_set():
        try:
            chan.write_eof()
        except (OSError, asyncssh.Error):
            pass
        try:
            await asyncio.wait_for(session.closed.wait(), KILL_GRACE + CLOSE_SLACK)
        except TimeoutError:
            chan.close()


async def _supervise(
    chan: asyncssh.SSHClientChannel[bytes],
    session: _StepSession,
    *,
    loop: asyncio.AbstractEventLoop,
    timeout: float | None,
    inactivity: float | None,
) -> StepResult:
    start = loop.time()
    timed_out = inactive = False
    while not session.closed.is_set() and not session.stop_requested:
        now = loop.time()
        if timeout is not None and now - start >= timeout:
            timed_out = True
            break
        if inactivity is not None and now - session.last_output >= inactivity:
            inactive = True
            break
        limits = [5.0]
        if timeout is not None:
            limits.append(start + timeout - now)
        if inactivity is not None:
            limits.append(session.last_output + inactivity - now)
        session.wake.clear()
        try:
            await asyncio.wait_for(session.wake.wait(), max(0.01, min(limits)))
        except TimeoutError:
            pass
    await _stop(chan, session)
    code = session.result_code()
    error = "stopped: the job was stopped" if session.stop_requested else None
    if code == CONNECT_FAILED and session.exit_code is None and session.exit_status is None:
        if not (timed_out or inactive or session.stop_requested or session.exit_signal):
            error = f"connection to {chan.get_extra_info('peername')} lost during the step"
    return StepResult(exit_code=code, timed_out=timed_out, inactive=inactive, error=error)


# --------------------------------------------------------------------------- the transport


class SSHTransport:
    """Runs steps on remote hosts; the contract of :class:`~.Transport`.

    One instance per process (the registry in :mod:`workspaces_jobs.tasks.transports`
    makes it) owns everything the transport holds: its event loop thread (started on
    first use), the connections of each job, the handshakes in flight per endpoint, the
    steps running, and whether new steps are refused. The loop-side state is touched only
    from the loop thread (no locks needed).
    """

    name = "ssh"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._links: dict[tuple[str, str], _Link] = {}
        self._opening: dict[tuple[str, str], asyncio.Task[tuple[_Link, list[str]]]] = {}
        self._handshakes: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._running: set[_StepSession] = set()
        #: Set while the job in this process is being stopped: steps about to start refuse.
        self._refusing = False

    # --- the contract

    def open(self) -> None:
        """A new job starts in this process: steps may start again."""
        self._refusing = False

    def run(
        self,
        device: Device,
        *,
        script: str,
        shell: str,
        env: Mapping[str, str],
        on_line: LineSink,
        timeout: float | None,
        inactivity: float | None,
    ) -> StepResult:
        if self._refusing:
            return StepResult(
                exit_code=STOPPED_EXIT_CODE, error="not started: the job is being stopped"
            )
        job_id = env.get("WSJOBS_JOB_ID") or f"adhoc-{threading.get_ident()}-{os.getpid()}"
        lines: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        future = self._submit(
            self._run_remote(
                device,
                job_id,
                script=script,
                shell=shell,
                env=env,
                emit=lambda stream, text: lines.put((stream, text)),
                timeout=timeout,
                inactivity=inactivity,
            )
        )
        future.add_done_callback(lambda _: lines.put(None))
        # Log lines from this (the task's) thread as they arrive, until the step is over.
        while (item := lines.get()) is not None:
            on_line(*item)
        try:
            result: StepResult = future.result()
        except Exception as exc:  # a bug here must fail the step, not the job
            return StepResult(exit_code=CONNECT_FAILED, error=f"ssh transport error: {exc!r}")
        return result

    def terminate(self, *, refuse_new: bool = False) -> int:
        """Stop every remote step this process is running (a job kill); waits for them.

        With ``refuse_new``, steps that have not opened their session yet do not start.
        """
        if refuse_new:
            self._refusing = True
        return int(self._call(self._terminate_all(), wait=KILL_GRACE + CLOSE_SLACK + 5) or 0)

    def close(self, job_id: str, device: str | None = None) -> None:
        """Close the job's connection to ``device`` (the device has no more steps; does not
        wait), or every connection the job opened (its steps are over; waits)."""
        if device is not None:
            if self._loop is not None:
                self._submit(self._release([(job_id, device)]))
            return

        async def _close() -> None:
            await self._release([k for k in self._links if k[0] == job_id])

        self._call(_close(), wait=10)

    # --- the event loop

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        """The transport's loop, started on first use in a daemon thread."""
        with self._loop_lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="wsjobs-ssh", daemon=True).start()
                self._loop = loop
            return self._loop

    def _submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._get_loop())

    def _call(self, coro: Any, wait: float) -> Any:
        if self._loop is None:  # never used: nothing to do
            coro.close()
            return None
        return self._submit(coro).result(timeout=wait)

    # --- on the loop

    async def _link_for(
        self, job_id: str, device: Device, *, fresh: bool
    ) -> tuple[_Link, list[str]]:
        """The job's connection to ``device``: cached, being opened by another step, or new."""
        key = (job_id, device.name)
        link = self._links.get(key)
        if link is not None and (fresh or link.conn.is_closed()):
            self._links.pop(key).close()
            link = None
        if link is not None:
            return link, []
        task = self._opening.get(key)
        if task is not None:  # another step of this job is connecting to the device
            opened, _ = await asyncio.shield(task)
            return opened, []
        task = asyncio.ensure_future(_open_link(device, self._handshakes))
        self._opening[key] = task
        try:
            opened, notes = await asyncio.shield(task)
        finally:
            self._opening.pop(key, None)
        self._links[key] = opened
        return opened, notes

    async def _run_remote(
        self,
        device: Device,
        job_id: str,
        *,
        script: str,
        shell: str,
        env: Mapping[str, str],
        emit: Callable[[str, str], None],
        timeout: float | None,
        inactivity: float | None,
    ) -> StepResult:
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            try:
                link, notes = await self._link_for(job_id, device, fresh=attempt > 0)
            except ConnectFailed as exc:
                return StepResult(exit_code=CONNECT_FAILED, error=str(exc))
            for note in notes:
                emit(STREAM_SYS, note)
            exit_marker = f"wsjobs-exit-{secrets.token_hex(16)}"
            end_marker = f"wsjobs-end-{secrets.token_hex(16)}"
            try:
                payload = _wrapper(
                    script=script,
                    shell=shell,
                    env=env,
                    exit_marker=exit_marker,
                    end_marker=end_marker,
                )
            except ValueError as exc:
                return StepResult(exit_code=CONNECT_FAILED, error=str(exc))
            async with link.sessions:
                if self._refusing:
                    return StepResult(
                        exit_code=STOPPED_EXIT_CODE, error="not started: the job is being stopped"
                    )
                try:
                    session = _StepSession(emit, exit_marker)
                    chan, _ = await link.conn.create_session(
                        lambda: session,  # noqa: B023 (called at once)
                        _bootstrap(end_marker),
                        encoding=None,
                    )
                except (asyncssh.ChannelOpenError, asyncssh.Error, OSError) as exc:
                    if attempt == 0 and link.conn.is_closed():
                        continue  # the cached connection died (host rebooted?): reconnect once
                    return StepResult(
                        exit_code=CONNECT_FAILED,
                        error=f"cannot start a session on {device.host}:{device.port}: {exc}",
                    )
                self._running.add(session)
                try:
                    chan.write(payload)
                    return await _supervise(
                        chan, session, loop=loop, timeout=timeout, inactivity=inactivity
                    )
                finally:
                    self._running.discard(session)
        raise AssertionError("unreachable")

    async def _release(self, keys: list[tuple[str, str]]) -> None:
        links = [self._links.pop(k) for k in keys if k in self._links]
        for link in links:
            link.close()
        for link in links:
            await link.conn.wait_closed()
            if link.tunnel is not None:
                await link.tunnel.wait_closed()

    async def _terminate_all(self) -> int:
        sessions = list(self._running)
        for session in sessions:
            session.stop_requested = True
            session.wake.set()
        if sessions:
            waiters = [asyncio.ensure_future(s.closed.wait()) for s in sessions]
            _, pending = await asyncio.wait(waiters, timeout=KILL_GRACE + CLOSE_SLACK + 1)
            for waiter in pending:
                waiter.cancel()
        return len(sessions)
