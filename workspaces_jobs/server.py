"""The embedded default: a local Prefect server that ``wsjobs`` starts once and reuses.

Prefect's ephemeral API starts a temporary server inside every process (~6.6 s before
the first call, tracebacks at exit, no UI, nothing scheduled runs after exit). Instead,
when ``PREFECT_API_URL`` is not set, the first command that needs the API starts the
Prefect server in the background — its home, SQLite database, log and ``server.json``
under ``WSJOBS_HOME/prefect``, bound to 127.0.0.1, analytics off — and every later
command finds it through ``server.json`` and reuses it.

It answers only this product and its own UI: credentials generated on first start
(``api-auth``, 0600, given to every client through :func:`ensure_api`'s environment),
CORS and CSRF tokens on, and :mod:`workspaces_jobs.serverapp`'s guard in front of
Prefect's app (Host and Origin checks).

Three rules keep it safe to leave running:

* **Identity.** ``server.json`` records each process started here as PID + kernel start
  time + command line (:mod:`workspaces_jobs.procs`); a PID that no longer matches is
  someone else's process and is never signalled or waited for — the stale file is
  removed with a one-line notice.
* **Same port.** A restart takes the port recorded in ``server.json`` (probed with
  ``SO_REUSEADDR``, as uvicorn binds, so TIME-WAIT sockets of a crashed server do not
  push it elsewhere): jobs still running keep talking to the address they know.
* **Companions.** :data:`COMPANIONS` are processes that run *with* the server (the
  watchdog first): started once it answers, reused, restarted by the next command when
  gone, stopped before it. A process added there needs nothing else. The watchdog also
  restarts a crashed server (:func:`revive`).

This module must not import Prefect: the API URL has to be in the environment before
Prefect reads its settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from workspaces_jobs import procs
from workspaces_jobs.errors import BadInput, ServerUnreachable
from workspaces_jobs.settings import get_settings

START_TIMEOUT = 180.0


class ServerError(ServerUnreachable):
    """The managed server could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class Companion:
    """A process that runs with the managed server.

    ``argv`` is its command line (``sys.executable`` first). It gets the environment of
    the command that started it plus the API's URL and credentials, its own session (a
    Ctrl-C of that command leaves it be) and its output in ``WSJOBS_HOME/prefect/NAME.log``.
    It must survive the API being briefly unreachable (a server restart) on its own.
    """

    name: str
    argv: tuple[str, ...]


#: Set in a companion's environment to its name: it runs beside a managed server.
COMPANION_ENV = "WSJOBS_COMPANION"

#: Processes started, reused and stopped with the managed server, in start order.
#: ``WSJOBS_COMPANIONS`` (comma-separated names; empty: none) selects among them.
COMPANIONS: list[Companion] = [
    Companion("watchdog", (sys.executable, "-m", "workspaces_jobs.cli", "watchdog")),
    # Runs schedules and later jobs (``wsjobs schedule``, ``run --at``): workspaces_jobs.worker
    Companion("worker", (sys.executable, "-m", "workspaces_jobs.cli", "worker")),
    # Keeps the history current so list/show/export never sync in the foreground (#17).
    Companion(
        "history-sync",
        (sys.executable, "-m", "workspaces_jobs.cli", "sync", "--every", "5", "--quiet"),
    ),
]


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    companions: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def server_home() -> Path:
    return get_settings().home / "prefect"


def _private_home() -> Path:
    """The server's folder, created (or tightened) to 0700: it holds the credentials, and
    the database with every job's parameters and logs."""
    home = server_home()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if home.stat().st_mode & 0o077:
        os.chmod(home, 0o700)
    return home


def _state_file() -> Path:
    return server_home() / "server.json"


def _log_file() -> Path:
    return server_home() / "server.log"


def _notice(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


# --- server.json ------------------------------------------------------------------------------


@dataclass
class _State:
    """``server.json``: the server's record, its port, and each companion's record."""

    port: int | None = None
    server: procs.ProcessRecord | None = None
    companions: dict[str, procs.ProcessRecord] = field(default_factory=dict)
    raw_pid: int | None = None  # the pid of a file this version cannot verify

    @classmethod
    def load(cls) -> _State | None:
        try:
            data = json.loads(_state_file().read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        state = cls()
        with contextlib.suppress(TypeError, ValueError):
            state.port = int(data.get("port"))  # type: ignore[arg-type]
        with contextlib.suppress(TypeError, ValueError):
            state.raw_pid = int(data.get("pid"))  # type: ignore[arg-type]
        state.server = procs.ProcessRecord.from_dict(data.get("server"))
        for name, rec in (data.get("companions") or {}).items():
            parsed = procs.ProcessRecord.from_dict(rec)
            if parsed:
                state.companions[str(name)] = parsed
        return state

    def save(self) -> None:
        data: dict[str, Any] = {
            "pid": self.server.pid if self.server else None,
            "port": self.port,
            "server": self.server.to_dict() if self.server else None,
            "companions": {name: rec.to_dict() for name, rec in self.companions.items()},
        }
        tmp = _state_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(_state_file())

    def info(self) -> ServerInfo | None:
        if self.server is None or self.port is None or not procs.is_running(self.server):
            return None
        running = {n: r.pid for n, r in self.companions.items() if procs.is_running(r)}
        return ServerInfo(pid=self.server.pid, port=self.port, companions=running)


def read_state() -> ServerInfo | None:
    """The recorded server, if its process is still the one recorded (it may be starting)."""
    state = _State.load()
    return state.info() if state else None


def status() -> ServerInfo | None:
    """The managed server if its process is alive (it may still be starting)."""
    return read_state()


def _stale_notice(state: _State) -> str | None:
    """Say what is wrong with a ``server.json`` whose server is not running, if anything."""
    rec = state.server
    pid = rec.pid if rec else state.raw_pid
    if pid is None:
        return None
    now = procs.describe(pid) if pid > 0 else "no process"
    if now == "no process":
        return f"the local Prefect server (pid {pid}) is gone; removed its stale {_state_file()}"
    if rec is None:
        return (
            f"{_state_file()} names pid {pid} without a start time and command line "
            f"(written by an older wsjobs; {now} runs there): left that process alone and "
            "removed the file"
        )
    return (
        f"pid {pid} from {_state_file()} is now {now}, not the local Prefect server: "
        "left it alone and removed the stale file"
    )


# --- starting ---------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(preferred: list[int]) -> int:
    for port in preferred:
        if 0 < port < 65536 and _port_free(port):
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _start_lock() -> Iterator[None]:
    """Two commands starting (or stopping) at once must not race."""
    _private_home()
    with open(server_home() / "start.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def auth_file() -> Path:
    return server_home() / "api-auth"


def auth_string() -> str:
    """The managed server's API credentials (``user:password``), created on first use.

    Kept in ``WSJOBS_HOME/prefect/api-auth``, readable by its owner only (0600): every
    client of the managed server is a process of the same user.
    """
    _private_home()
    path = auth_file()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"wsjobs:{secrets.token_urlsafe(32)}\n")
    try:
        if not path.is_file():
            raise IsADirectoryError(21, "not a file")
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
            _notice(f"{path} was readable by others; it is now readable by its owner only")
        value = path.read_text().strip()
    except OSError as exc:
        raise ServerError(
            f"cannot read the API credentials in {path} ({exc.strerror or exc}): remove it "
            "and run `wsjobs server stop`; the next command makes new ones"
        ) from exc
    if ":" not in value or value.startswith(":"):
        raise ServerError(f"{path} is not `user:password`; remove it and run `wsjobs server stop`")
    return value


def _ui_origins(port: int) -> str:
    return f"http://127.0.0.1:{port},http://localhost:{port}"


def server_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(server_home()),
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        PREFECT_SERVER_API_AUTH_STRING=auth_string(),
        PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS=_ui_origins(port),
        PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED="true",
    )
    env.update(vacuum_env(env))
    return env


def vacuum_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Prefect's own retention for the managed server: its ``db_vacuum`` service deletes
    finished flow runs (with their task runs, logs, artifacts) ``WSJOBS_PREFECT_RETENTION_DAYS``
    after they ended, and old events. The history sync has long taken those jobs (it
    reads them within a minute); the history keeps them (``wsjobs prune``). Values the
    user set for these Prefect settings win."""
    days = get_settings().prefect_retention_days
    out = {"PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs" if days else "events"}
    if days:
        seconds = max(3601, int(days * 86400))  # Prefect's minimum is one hour
        out["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"] = str(seconds)
    return {k: v for k, v in out.items() if k not in environ}


def client_env(info: ServerInfo) -> dict[str, str]:
    """What a client of the managed server needs in its environment."""
    return {
        "PREFECT_API_URL": info.api_url,
        "PREFECT_API_AUTH_STRING": auth_string(),
        "PREFECT_UI_URL": info.ui_url,
    }


def _server_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "workspaces_jobs.serverapp", str(port)]


def _launch(argv: list[str], env: dict[str, str], log: Path) -> procs.ProcessRecord:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return procs.record(proc, argv)


def start(
    *,
    wait: Callable[[str], None] | None = None,
    notice: Callable[[str], None] = _notice,
) -> ServerInfo:
    """Start the managed server unless one is running; block until it is healthy; then make
    sure its companions run. A stale ``server.json`` is replaced (with a ``notice``)."""
    with _start_lock():
        state = _State.load() or _State()
        info = state.info()
        if info is None:
            message = _stale_notice(state)
            if message:
                notice(message)
            port = _free_port([p for p in (state.port, get_settings().server_port) if p])
            rec = _launch(_server_argv(port), server_env(port), _log_file())
            state = _State(port=port, server=rec, companions=state.companions)
            state.save()
            info = ServerInfo(pid=rec.pid, port=port)
        _wait_healthy(info, state.server, wait)
        _start_companions(state, info)
        return state.info() or info


def _wait_healthy(
    info: ServerInfo, rec: procs.ProcessRecord | None, wait: Callable[[str], None] | None
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not healthy(info.api_url, timeout=1.0):
        if rec is None or not procs.is_running(rec):
            raise ServerError(f"the local Prefect server exited while starting; see {_log_file()}")
        if time.monotonic() > deadline:
            raise ServerError(
                f"the local Prefect server did not answer within {START_TIMEOUT:.0f} s; "
                f"see {_log_file()} or run `wsjobs server stop` and retry"
            )
        if wait:
            wait(f"Starting the local Prefect server on {info.ui_url} …")
        time.sleep(0.3)


def enabled_companions() -> list[Companion]:
    """:data:`COMPANIONS` filtered by ``WSJOBS_COMPANIONS`` (unset: all of them)."""
    chosen = get_settings().companions
    if chosen is None:
        return list(COMPANIONS)
    names = {n.strip() for n in chosen.split(",") if n.strip()}
    unknown = sorted(names - {c.name for c in COMPANIONS})
    if unknown:
        raise BadInput(
            f"WSJOBS_COMPANIONS names no companion {', '.join(map(repr, unknown))}: "
            f"use a comma-separated list of {', '.join(c.name for c in COMPANIONS)} "
            "(empty: none)"
        )
    return [c for c in COMPANIONS if c.name in names]


def _companions_running(state: _State) -> bool:
    return all(
        (rec := state.companions.get(c.name)) is not None and procs.is_running(rec)
        for c in enabled_companions()
    )


def _start_companions(state: _State, info: ServerInfo) -> None:
    """Start every enabled companion that is not running (the caller holds the lock)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(client_env(info))
    changed = False
    for comp in enabled_companions():
        rec = state.companions.get(comp.name)
        if rec is not None and procs.is_running(rec):
            continue
        state.companions[comp.name] = _launch(
            list(comp.argv), {**env, COMPANION_ENV: comp.name}, server_home() / f"{comp.name}.log"
        )
        changed = True
    if changed:
        state.save()


def revive() -> ServerInfo | None:
    """Start the managed server again when its process is gone; None when nothing is managed.

    The watchdog companion calls this when the API stops answering, so a crashed server
    comes back (on the same port) without waiting for the next ``wsjobs`` command, and
    running jobs, which wait for the API (see :mod:`workspaces_jobs.gateway`), finish
    with their real status. A server that runs but does not answer is left alone, and
    ``wsjobs server stop`` stops the companions first, so nothing revives a stopped server.
    """
    state = _State.load()
    if state is None or state.port is None or state.info() is not None:
        return None
    return start()


# --- stopping ---------------------------------------------------------------------------------


def stop(*, notice: Callable[[str], None] = _notice) -> ServerInfo | None:
    """Stop the companions, then the server (its process group); None if none was running.

    Only processes that are still the ones recorded are signalled; anything else found
    under a recorded PID is left alone and the stale file removed (with a ``notice``).
    """
    if not _state_file().exists():  # nothing to stop: create nothing either
        return None
    with _start_lock():
        state = _State.load()
        if state is None:
            return None
        info = state.info()
        for name, rec in reversed(list(state.companions.items())):
            if not procs.stop_group(rec, grace=10.0):
                notice(f"companion {name} (pid {rec.pid}) did not stop")
        if info is None:
            message = _stale_notice(state)
            if message:
                notice(message)
        elif state.server and not procs.stop_group(state.server):
            raise ServerError(
                f"the local Prefect server (pid {info.pid}) survived SIGKILL; "
                f"stop it by hand and remove {_state_file()}"
            )
        _State(port=state.port).save()  # the next start takes the same port again
        return info


# --- clients ----------------------------------------------------------------------------------


def ensure_api(*, wait: Callable[[str], None] | None = None) -> str:
    """Make sure a Prefect API is reachable and ``PREFECT_API_URL`` names it; return it.

    With ``PREFECT_API_URL`` set (a real server, a test harness), nothing is started.
    The managed server's companions are started (again) here when they are not running.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    state = _State.load() or _State()
    info = state.info()
    if info is None or not _companions_running(state) or not healthy(info.api_url):
        info = start(wait=wait)
    env = client_env(info)
    os.environ.setdefault("PREFECT_UI_URL", env.pop("PREFECT_UI_URL"))  # a proxy's URL wins
    os.environ.update(env)
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
