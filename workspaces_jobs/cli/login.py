"""``wsjobs login URL``, ``wsjobs logout``, ``wsjobs whoami`` and ``wsjobs note``; the
client the acting commands use once logged in.

After ``wsjobs login`` every acting command (run, also ``--at/--in``; cancel, kill, rerun;
notify with its rules, ``--remove``, ``--list``, ``--deliver`` and ``--log``; note;
schedule and its changes; ``filters save|delete`` and ``view set|reset``, with their
reads ``filters`` and ``view show``) goes through the web server's JSON API
(:mod:`workspaces_jobs.web.api` and its siblings) as the token's user, so the server
enforces roles and records who did it. The login is a file,
``$WSJOBS_HOME/login.json`` (``WSJOBS_LOGIN_FILE``), holding the URL and the personal
token, written 0600 (created with that mode, never chmod-ed after a write). Without it
the CLI works as before, against a local or Prefect server.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from workspaces_jobs.cli.output import console, print_json
from workspaces_jobs.errors import (
    BadInput,
    Forbidden,
    NotFound,
    ServerUnreachable,
    WsJobsError,
)

#: Seconds an API request may take (a kill waits up to 30 s for the job to stop).
TIMEOUT = 90.0


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
    app.command()(whoami)
    app.command()(note)


def login_file() -> Path:
    explicit = os.environ.get("WSJOBS_LOGIN_FILE", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    from workspaces_jobs.settings import get_settings

    return get_settings().home / "login.json"


class Refused(WsJobsError):
    """The server refused the request: a job whose status does not allow it (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class Remote:
    """The logged-in server: its URL and this user's token."""

    url: str
    token: str
    user: str = ""

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One API request; the server's errors become the product's (same exit codes)."""
        import httpx

        try:
            response = httpx.request(
                method,
                f"{self.url}/api/v1{path}",
                json=body if method != "GET" else None,
                params=params,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise ServerUnreachable(
                f"the wsjobs server {self.url} does not answer ({type(exc).__name__}):"
                " start it, or `wsjobs logout` to act locally"
            ) from None
        return answer(response)


def answer(response: Any) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code < 400:
        return data
    message = data.get("error") if isinstance(data, dict) else None
    message = message or f"the server answered HTTP {response.status_code}"
    status = response.status_code
    if status in (401, 403, 429):
        raise Forbidden(message)
    if status == 404:
        raise NotFound(message)
    if status == 409:
        raise Refused(message)
    if status == 400:
        raise BadInput(message)
    if status == 503:
        raise ServerUnreachable(message)
    raise WsJobsError(message)


def remote() -> Remote | None:
    """The login, or None when the CLI acts locally."""
    path = login_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise BadInput(
            f"{path} is not a wsjobs login: remove it and run `wsjobs login URL`"
        ) from None
    if not isinstance(data, dict) or not data.get("url") or not data.get("token"):
        raise BadInput(f"{path} is not a wsjobs login: remove it and run `wsjobs login URL`")
    return Remote(str(data["url"]), str(data["token"]), str(data.get("user") or ""))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file of that name keeps its mode otherwise
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _check_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BadInput(f"{url!r} is not a URL: write e.g. http://127.0.0.1:8787")
    return url


def login(
    url: str = typer.Argument(..., help="The wsjobs web server, e.g. http://127.0.0.1:8787."),
    user: str | None = typer.Option(None, "--user", "-u", help="Account name (else asked)."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input."
    ),
) -> None:
    """Sign in to a wsjobs server: later acting commands go through it as you.

    A personal token is made by the server and kept in $WSJOBS_HOME/login.json (0600);
    `wsjobs logout` revokes it."""
    import sys

    import httpx

    url = _check_url(url)
    name = user or typer.prompt("User")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    try:
        response = httpx.post(
            f"{url}/api/v1/login",
            json={"user": name, "password": password, "label": "wsjobs login"},
            timeout=TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise ServerUnreachable(f"{url} does not answer ({type(exc).__name__})") from None
    data = answer(response)
    _write_private(
        login_file(), json.dumps({"url": url, "user": data["user"], "token": data["token"]})
    )
    console.print(f"Logged in to {url} as {data['user']} ({data['role']}).", markup=False)


def logout() -> None:
    """Revoke this login's token on the server and forget it here."""
    current = remote()
    if current is None:
        console.print("Not logged in.")
        return
    try:
        current.call("POST", "/logout")
    finally:
        login_file().unlink(missing_ok=True)
    console.print(f"Logged out of {current.url}.", markup=False)


def whoami(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Who the CLI acts as: the logged-in user and role, or the local OS user."""
    from workspaces_jobs.activity import local_user

    current = remote()
    data = (
        current.call("GET", "/whoami") | {"url": current.url}
        if current
        else {"user": local_user(), "role": None, "url": None}
    )
    if json_out:
        print_json(data)
    elif current:
        console.print(f"{data['user']} ({data['role']}) on {current.url}", markup=False)
    else:
        console.print(f"{data['user']} (local, not logged in)", markup=False)


def note(
    job_id: str = typer.Argument(..., help="The job to write a note on."),
    text: str = typer.Argument(..., help="The note: why it was rerun, what was found."),
    json_out: bool = typer.Option(False, "--json", help="Print the note as JSON."),
) -> None:
    """Add a note to a job (kept in the history's notes, shown in the detail view)."""
    from workspaces_jobs import activity

    current = remote()
    if current:
        data = current.call("POST", f"/jobs/{job_id}/notes", {"text": text})
    else:
        from workspaces_jobs.gateway import resolve_job_id

        activity.check_note(text)
        full = resolve_job_id(job_id)
        data = activity.add_note(full, activity.local_user(), text).to_dict()
    if json_out:
        print_json(data)
    else:
        console.print(f"Note {data['id'][:8]} on job {data['job_id']} by {data['author']}.",
                      markup=False)  # fmt: skip
