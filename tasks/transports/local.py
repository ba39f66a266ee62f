"""The ``local`` transport: a step is a subprocess on the worker host.

Each local device gets its own sandbox folder (``WSJOBS_HOME/devices/<name>``) as the
working directory. The script runs in its own session (process group), so a timeout,
an inactivity stop or a job kill ends the whole tree the script started, not only
the shell. Output is read from both pipes in one thread with ``selectors``: no extra
threads per step, and lines reach the log in the order they were written per stream.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from workspaces_jobs import stepenv
from workspaces_jobs.catalog import Device
from workspaces_jobs.runmeta import STREAM_ERR, STREAM_OUT
from workspaces_jobs.settings import get_settings
from workspaces_jobs.tasks.lines import LineSplitter
from workspaces_jobs.tasks.transports import STOPPED_EXIT_CODE, LineSink, StepResult

#: Seconds between SIGTERM and SIGKILL when a step is stopped.
KILL_GRACE = 2.0


def job_processes(job_id: str, proc_root: Path = Path("/proc")) -> list[int]:
    """Pids of step processes on this host started for ``job_id`` (``WSJOBS_JOB_ID`` env).

    Used by the watchdog after a job's executor died: its step processes live in their
    own sessions, so they outlive it. Only processes of the same user are readable.
    """
    needle = f"WSJOBS_JOB_ID={job_id}".encode()
    pids = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def reap_job(job_id: str) -> list[int]:
    """SIGKILL the process groups of ``job_id``'s leftover local step processes."""
    pids = job_processes(job_id)
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's process group, then SIGKILL whatever is left after a grace."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # The leader is gone; make sure no child it left behind keeps running.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        except subprocess.TimeoutExpired:
            continue


def _start(
    shell: str, script: str, sandbox: Path, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [shell, "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=sandbox,
        env={**stepenv.base(os.environ), **env},  # never the whole environment
        start_new_session=True,
    )


class LocalTransport:
    """Runs steps as subprocesses on this host; the contract of :class:`~.Transport`.

    One instance per process (made by the registry) knows the step processes it started,
    so a job kill stops them all, and refuses new steps while the job is being stopped.
    """

    name = "local"

    def __init__(self) -> None:
        self._live: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        #: Set once the job in this process is being stopped: steps about to start refuse.
        self._refusing = False
        #: Sandbox folders made (or found) already: a step does not ``mkdir`` every time.
        self._made: set[Path] = set()

    def open(self) -> None:
        """A new job starts in this process: undo ``terminate(refuse_new=True)``."""
        with self._lock:
            self._refusing = False

    def terminate(self, *, refuse_new: bool = False) -> int:
        """Stop every step process group this transport started (a job kill).

        With ``refuse_new`` a step whose thread is between "submitted" and "started" when
        the job is stopped does not start its process afterwards (a kill must leave nothing
        running); :meth:`open` lifts that when the next job starts in this process.
        """
        with self._lock:
            if refuse_new:
                self._refusing = True
            procs = list(self._live)
        threads = [threading.Thread(target=stop_group, args=(p,), daemon=True) for p in procs]
        for t in threads:  # in parallel: each group gets its SIGTERM grace at the same time
            t.start()
        for t in threads:
            t.join()
        return len(procs)

    def close(self, job_id: str, device: str | None = None) -> None:
        """Nothing to free: a local step holds nothing once it has ended."""

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
        sandbox = self._sandbox(device.name)
        with self._lock:
            if self._refusing:
                return StepResult(
                    exit_code=STOPPED_EXIT_CODE, error="not started: the job is being stopped"
                )
        try:
            try:
                proc = _start(shell, script, sandbox, env)
            except FileNotFoundError:
                if sandbox.is_dir():
                    raise  # the shell is missing
                self._made.discard(sandbox)  # removed since: make it again, once
                proc = _start(shell, script, self._sandbox(device.name), env)
        except OSError as exc:
            return StepResult(exit_code=127, error=f"cannot start {shell}: {exc.strerror}")
        with self._lock:
            self._live.add(proc)
            refused = self._refusing  # the job was stopped while this step was starting
        try:
            if refused:
                stop_group(proc)
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
                return StepResult(exit_code=STOPPED_EXIT_CODE, error="stopped: the job was stopped")
            result = self._pump(proc, on_line, timeout=timeout, inactivity=inactivity)
            if self._refusing and result.exit_code != 0:
                return StepResult(exit_code=result.exit_code, error="stopped: the job was stopped")
            return result
        finally:
            with self._lock:
                self._live.discard(proc)

    def _sandbox(self, name: str) -> Path:
        path = get_settings().devices_root / name
        if path not in self._made:
            path.mkdir(parents=True, exist_ok=True)
            self._made.add(path)
        return path

    @staticmethod
    def _pump(
        proc: subprocess.Popen[bytes],
        on_line: LineSink,
        *,
        timeout: float | None,
        inactivity: float | None,
    ) -> StepResult:
        assert proc.stdout is not None and proc.stderr is not None
        splitters = {
            proc.stdout.fileno(): LineSplitter(lambda text: on_line(STREAM_OUT, text)),
            proc.stderr.fileno(): LineSplitter(lambda text: on_line(STREAM_ERR, text)),
        }
        sel = selectors.DefaultSelector()
        for fd in splitters:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        start = last_output = time.monotonic()
        timed_out = inactive = False
        open_fds = set(splitters)
        try:
            while open_fds:
                now = time.monotonic()
                limits = [0.5]
                if timeout is not None:
                    limits.append(start + timeout - now)
                if inactivity is not None:
                    limits.append(last_output + inactivity - now)
                wait = max(0.0, min(limits))
                if timeout is not None and now - start >= timeout:
                    timed_out = True
                    break
                if inactivity is not None and now - last_output >= inactivity:
                    inactive = True
                    break
                for key, _ in sel.select(wait):
                    fd = int(key.fd)
                    data = os.read(fd, 65536)
                    if data:
                        splitters[fd].feed(data)
                        last_output = time.monotonic()
                    else:
                        sel.unregister(fd)
                        open_fds.discard(fd)
                # The script exited but a background child still holds the pipes open:
                # stop waiting once the leader is gone and the pipes are drained.
                if proc.poll() is not None and not sel.select(0):
                    break
        finally:
            if timed_out or inactive or proc.poll() is None:
                stop_group(proc)
            else:
                try:  # leave nothing the script started behind
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sel.close()
            for splitter in splitters.values():
                splitter.close()
            proc.stdout.close()
            proc.stderr.close()
        code = proc.wait()
        return StepResult(exit_code=code, timed_out=timed_out, inactive=inactive)
