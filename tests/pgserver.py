"""A throwaway PostgreSQL server for tests and benchmarks (Debian's ``postgresql`` package).

``initdb`` into a temporary folder, ``pg_ctl start`` on a free loopback port (Unix socket
in that folder too), one database created; on exit ``pg_ctl stop -m immediate`` and, whatever
it said, a SIGKILL of the postmaster recorded in ``postmaster.pid``, then the folder is
removed. As root (CI), PostgreSQL refuses to run, so its commands run as the ``postgres``
user the Debian package creates. A missing package is a failure that says how to install
it (``scripts/test`` does), never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from proctree import free_port

#: The user the server trusts on loopback (no password: ``--auth=trust``).
USER = "wsjobs"


def pg_bin(name: str) -> str:
    """``/usr/lib/postgresql/<newest>/bin/<name>`` (Debian keeps them off the PATH)."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise AssertionError(
            f"PostgreSQL's {name} is missing: install Debian's postgresql package"
            " (scripts/test does)"
        )
    return found[-1]


@dataclass(frozen=True)
class Postgres:
    port: int
    database: str
    folder: Path

    @property
    def dsn(self) -> str:
        """libpq key/value string (DuckDB's postgres extension)."""
        return f"dbname={self.database} host=127.0.0.1 port={self.port} user={USER}"

    def size_bytes(self) -> int:
        """``pg_database_size`` of the database, read with ``psql``."""
        out = subprocess.run(
            [pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-At", "-c",
             f"SELECT pg_database_size('{self.database}')", self.database],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return int(out.stdout.strip())


def _kill_postmaster(data: Path) -> None:
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres_server(database: str, *, options: str = "") -> Iterator[Postgres]:
    """Start a server holding ``database``; stop it and remove its files at the end."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    root = os.getuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="wsjobs-pg-", dir="/tmp"))
    data = folder / "data"
    port = free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", "postgres", "--", *args] if root else list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)

    if root:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    try:
        run(initdb, "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8")
        flags = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder}"
            f" {options}"
        )
        run(pg_ctl, "-D", str(data), "-o", flags, "-l", str(folder / "log"), "-w", "start")
        subprocess.run(
            [pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, database],
            check=True,
            timeout=60,
        )
        yield Postgres(port, database, folder)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        _kill_postmaster(data)  # whatever pg_ctl said: no server outlives the test
        shutil.rmtree(folder, ignore_errors=True)
