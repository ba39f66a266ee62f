"""The embedded default: a local Prefect server that ``wsjobs`` starts once and reuses.

Prefect's ephemeral API starts a temporary server inside every process (~6.6 s before
the first call, tracebacks at exit, no UI, nothing scheduled runs after exit). Instead,
when ``PREFECT_API_URL`` is not set, the first command that needs the API starts
``prefect server start`` in the background — its home, SQLite database, log and
``server.json`` (pid, port) under ``WSJOBS_HOME/prefect``, bound to 127.0.0.1, analytics
off — and every later command finds it through ``server.json`` and reuses it.

This module must not import Prefect: the API URL has to be in the environment before
Prefect reads its settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from workspaces_jobs.settings import get_settings

START_TIMEOUT = 180.0


class ServerError(RuntimeError):
    """The managed server could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def server_home() -> Path:
    return get_settings().home / "prefect"


def _state_file() -> Path:
    return server_home() / "server.json"


def _log_file() -> Path:
    return server_home() / "server.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def read_state() -> ServerInfo | None:
    try:
        data = json.loads(_state_file().read_text())
        return ServerInfo(pid=int(data["pid"]), port=int(data["port"]))
    except (OSError, ValueError, KeyError):
        return None


def status() -> ServerInfo | None:
    """The managed server if its process is alive (it may still be starting)."""
    info = read_state()
    return info if info and _alive(info.pid) else None


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ServerError("no free TCP port on 127.0.0.1 for the Prefect server")


@contextlib.contextmanager
def _start_lock() -> Iterator[None]:
    """Two commands starting at once must not start two servers."""
    server_home().mkdir(parents=True, exist_ok=True)
    with open(server_home() / "start.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def server_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(server_home()),
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
    )
    return env


def start(*, wait: Callable[[str], None] | None = None) -> ServerInfo:
    """Start the managed server unless one is running; block until it is healthy."""
    with _start_lock():
        info = status()
        if info is None:
            port = _free_port(get_settings().server_port)
            log = open(_log_file(), "ab")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=server_env(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            info = ServerInfo(pid=proc.pid, port=port)
            _state_file().write_text(json.dumps({"pid": info.pid, "port": info.port}))
        _wait_healthy(info, wait)
        return info


def _wait_healthy(info: ServerInfo, wait: Callable[[str], None] | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not healthy(info.api_url, timeout=1.0):
        if not _alive(info.pid):
            raise ServerError(f"the local Prefect server exited while starting; see {_log_file()}")
        if time.monotonic() > deadline:
            raise ServerError(
                f"the local Prefect server did not answer within {START_TIMEOUT:.0f} s; "
                f"see {_log_file()} or run `wsjobs server stop` and retry"
            )
        if wait:
            wait(f"Starting the local Prefect server on {info.ui_url} …")
        time.sleep(0.3)


def stop() -> ServerInfo | None:
    """Stop the managed server (its whole process group); None if none was running."""
    info = status()
    if info is None:
        _state_file().unlink(missing_ok=True)
        return None
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(info.pid, sig)
        deadline = time.monotonic() + grace
        while _alive(info.pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.pid, os.WNOHANG)
            time.sleep(0.1)
        if not _alive(info.pid):
            break
    _state_file().unlink(missing_ok=True)
    return info


def ensure_api(*, wait: Callable[[str], None] | None = None) -> str:
    """Make sure a Prefect API is reachable and ``PREFECT_API_URL`` names it; return it.

    With ``PREFECT_API_URL`` set (a real server, a test harness), nothing is started.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    info = status()
    if info is None or not healthy(info.api_url):
        info = start(wait=wait)
    os.environ["PREFECT_API_URL"] = info.api_url
    os.environ.setdefault("PREFECT_UI_URL", info.ui_url)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "prefect" in sys.modules:  # settings were read at import; point them here too
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
    return info.api_url


def ui_url() -> str:
    """Base URL of the Prefect UI for links printed next to jobs."""
    url = os.environ.get("PREFECT_UI_URL")
    if url:
        return url.rstrip("/")
    api = os.environ.get("PREFECT_API_URL", "")
    return api.rstrip("/").removesuffix("/api") or "http://127.0.0.1:4200"
