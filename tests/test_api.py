"""The JSON API and ``wsjobs login``: a real ``wsjobs ui`` process on loopback, the
session's Prefect server, real accounts and tokens, and the CLI as a subprocess acting
through the API from a home of its own (like a laptop: no Prefect credentials there)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from webauth import signed_in

from workspaces_jobs.identity.accounts import add_user
from workspaces_jobs.jobs import submit_job
from workspaces_jobs.reporting.store import open_store

pytestmark = pytest.mark.usefixtures("prefect_server")

PASSWORD = "correct horse battery staple"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    history: Path
    tag: str
    laptop: Path  # the CLI's own WSJOBS_HOME

    def user(self, role: str) -> str:
        return f"{role[0]}{self.tag}"

    def cli(self, who: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, WSJOBS_HOME=str(self.laptop / who))
        env.pop("PREFECT_API_URL", None)
        return subprocess.run(
            [sys.executable, "-m", "workspaces_jobs.cli", *args],
            capture_output=True, text=True, timeout=180, env=env, input=stdin,
        )  # fmt: skip

    def login(self, who: str) -> Path:
        out = self.cli(who, "login", self.url, "--user", who, "--password-stdin", stdin=PASSWORD)
        assert out.returncode == 0, out.stderr
        return self.laptop / who / "login.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tag = uuid.uuid4().hex[:6]
    for role in ("viewer", "operator", "admin"):
        add_user(f"{role[0]}{tag}", role, PASSWORD)  # type: ignore[arg-type]
    base = tmp_path_factory.mktemp("api")
    history, log, port = base / "history.ducklake", base / "ui.log", _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workspaces_jobs.cli", "ui", "--port", str(port),
             "--history", str(history), "--sync-every", "3600"],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield Server(url, history, tag, base / "laptops")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def activity_of(history: Path, job_id: str) -> list[tuple[str, str, str]]:
    with open_store(history, read_only=True) as con:
        return [
            (r[0], r[1], r[2])
            for r in con.cursor()
            .execute(
                "SELECT who, action, source FROM activity WHERE job_id = $j ORDER BY time",
                {"j": job_id},
            )
            .fetchall()
        ]


def test_login_file_is_private_and_a_wrong_password_says_nothing_more(server: Server) -> None:
    viewer = server.user("viewer")
    path = server.login(viewer)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["url"] == server.url and saved["user"] == viewer
    whoami = server.cli(viewer, "whoami", "--json")
    assert json.loads(whoami.stdout) == {"user": viewer, "role": "viewer", "url": server.url}
    for who, password in ((viewer, "wrong"), ("nobody-" + server.tag, PASSWORD)):
        bad = httpx.post(
            f"{server.url}/api/v1/login", json={"user": who, "password": password}, timeout=60
        )
        assert (bad.status_code, bad.json()["error"]) == (401, "wrong user name or password")
    assert httpx.get(f"{server.url}/api/v1/whoami", timeout=60).status_code == 401  # no token


def test_roles_are_enforced_for_the_cli_through_the_api(server: Server) -> None:
    viewer, operator, admin = (server.user(r) for r in ("viewer", "operator", "admin"))
    for who in (viewer, operator, admin):
        server.login(who)
    others = submit_job("ok", target=["t1"], owner="someone-else", start=False)
    # a viewer may not cancel: exit 8, one error line
    refused = server.cli(viewer, "cancel", others)
    assert refused.returncode == 8, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "may not cancel" in lines[0]
    # an operator may not cancel someone else's job ...
    refused = server.cli(operator, "cancel", others)
    assert refused.returncode == 8 and "someone-else's job" in refused.stderr
    # ... an admin may, and the activity log says who, through the API
    done = server.cli(admin, "cancel", others)
    assert done.returncode == 0, done.stderr
    assert f"canceled by {admin}" in done.stdout
    assert activity_of(server.history, others) == [(admin, "cancel", "api")]
    # an operator's own run is theirs: owner and activity are the token's user
    ran = server.cli(operator, "run", "ok", "--devices", "t1", "--no-wait", "--json")
    assert ran.returncode == 0, ran.stderr
    job = json.loads(ran.stdout)
    assert job["owner"] == operator
    note = server.cli(operator, "note", job["id"], "checked the disk first", "--json")
    assert note.returncode == 0, note.stderr
    assert json.loads(note.stdout)["author"] == operator
    assert activity_of(server.history, job["id"]) == [
        (operator, "run", "api"),
        (operator, "note", "api"),
    ]
    shown = httpx.get(
        f"{server.url}/api/v1/jobs/{job['id']}",
        headers={"Authorization": f"Bearer {_token(server, operator)}"},
        timeout=60,
    ).json()
    assert [(n["author"], n["text"]) for n in shown["notes"]] == [
        (operator, "checked the disk first")
    ]
    assert server.cli(viewer, "note", job["id"], "a viewer's note").returncode == 8


def _token(server: Server, who: str) -> str:
    return str(json.loads((server.laptop / who / "login.json").read_text())["token"])


def test_logout_revokes_the_token(server: Server) -> None:
    admin = server.user("admin")
    path = server.login(admin)
    kept = path.read_text()
    assert server.cli(admin, "logout").returncode == 0
    assert not path.exists()
    path.write_text(kept)  # someone kept a copy of the file: the token is dead anyway
    os.chmod(path, 0o600)
    out = server.cli(admin, "whoami")
    assert out.returncode == 8 and "revoked" in out.stderr
    path.unlink()


def test_notes_from_the_web_form_reach_the_tab_the_exports_and_the_stopped_by_filter(
    server: Server, tmp_path: Path
) -> None:
    import re

    import openpyxl

    from workspaces_jobs.reporting.sync import sync_history

    admin = server.user("admin")
    server.login(admin)
    job = submit_job("ok", target=["t1"], owner="someone-else", info=f"notes {server.tag}",
                     start=False)  # fmt: skip
    assert server.cli(admin, "cancel", job).returncode == 0
    web = signed_in(httpx.Client(base_url=server.url, timeout=60), admin)  # the web's sign-in
    page = web.get(f"/jobs/{job}?tab=activity")
    assert page.status_code == 200 and 'id="note-form"' in page.text
    # a job of the same search that nobody canceled: --stopped-by leaves it out
    untouched = submit_job("ok", target=["t1"], owner="someone-else",
                           info=f"notes {server.tag} untouched", start=False)  # fmt: skip
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    note = "found a <b>stale</b> lock; rerun tomorrow"
    forged = httpx.post(f"{server.url}/jobs/{job}/notes", data={"text": note}, timeout=60)
    assert forged.status_code == 401  # not signed in
    assert web.post(f"/jobs/{job}/notes", data={"text": note}).status_code == 403  # no token
    posted = web.post(f"/jobs/{job}/notes", data={"csrf": token[1], "text": note})
    assert posted.status_code == 303, posted.text
    tab = web.get(posted.headers["location"]).text
    assert "found a &lt;b&gt;stale&lt;/b&gt; lock" in tab  # shown as text
    assert re.search(rf"<td>{admin}</td><td>cancel</td><td>api</td>", tab)
    author = admin  # the signed-in user, never the server's OS user
    assert activity_of(server.history, job) == [(admin, "cancel", "api"), (author, "note", "web")]
    # the job row into the history, then every export format carries the note
    sync_history(server.history)
    expected = f"{author}: {note}"
    flags = ["--history", str(server.history), "--age", "all", "--stopped-by", admin]
    flags += ["--search", f"notes {server.tag}"]
    listed = server.cli(admin, "list", *flags, "--json", "--columns", "id,notes")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [job] and rows[0]["notes"].endswith(expected)
    from workspaces_jobs.lifecycle import cancel_job

    cancel_job(untouched, who="cleanup")
    for fmt in ("csv", "json", "parquet", "xlsx", "html"):
        out = tmp_path / f"notes.{fmt}"
        done = server.cli(admin, "export", "--format", fmt, "--out", str(out), *flags,
                          "--columns", "id,notes")  # fmt: skip
        assert done.returncode == 0, done.stderr
        if fmt == "xlsx":
            book = openpyxl.load_workbook(out, read_only=True)
            cells = [str(c.value) for row in book.worksheets[0].iter_rows() for c in row]
            assert any(c.endswith(expected) for c in cells), cells
        elif fmt == "parquet":
            import duckdb

            got = duckdb.sql(f"SELECT notes FROM read_parquet('{out}')").fetchall()
            assert got[0][0].endswith(expected)
        elif fmt == "html":
            assert "found a &lt;b&gt;stale&lt;/b&gt; lock" in out.read_text()
        else:
            assert note in out.read_text().replace('\\"', '"')


def test_one_throttle_for_the_api_login_and_the_web_sign_in(server: Server) -> None:
    """``/api/v1/login`` counts failures in the web sign-in's own throttle: after
    USER_FAILURES wrong passwords through the API even the right one is refused (429,
    before any password check), through the API and through the web form alike."""
    import re

    from workspaces_jobs.web.gate import USER_FAILURES

    name = f"t{server.tag}"
    add_user(name, "operator", PASSWORD)
    login = f"{server.url}/api/v1/login"
    for _ in range(USER_FAILURES):
        bad = httpx.post(login, json={"user": name, "password": "wrong-one"}, timeout=60)
        assert bad.status_code == 401, bad.text
    refused = httpx.post(login, json={"user": name, "password": PASSWORD}, timeout=60)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"].startswith("too many failed sign-ins: try again in ")
    # the web form shares the count: the right password is refused there too
    with httpx.Client(base_url=server.url, timeout=60) as web:
        form = web.get("/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        page = web.post(
            "/signin", data={"csrf": token[1], "name": name, "password": PASSWORD, "next": "/"}
        )
        assert page.status_code == 429 and "Too many sign-in attempts" in page.text
    # another user from the same address is not blocked (per user, and the per-address
    # limit is higher)
    viewer = server.user("viewer")
    ok = httpx.post(login, json={"user": viewer, "password": PASSWORD}, timeout=60)
    assert ok.status_code == 200, ok.text
