"""The JSON API and ``wsjobs login``: a real ``wsjobs ui`` process on loopback, the
session's Prefect server, real accounts and tokens, and the CLI as a subprocess acting
through the API from a home of its own (like a laptop: no Prefect credentials there)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from webauth import serve_ui, signed_in

from workspaces_jobs.identity.accounts import add_user
from workspaces_jobs.jobs import submit_job
from workspaces_jobs.reporting.store import open_store

pytestmark = pytest.mark.usefixtures("prefect_server")

PASSWORD = "correct horse battery staple"


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
        name = f"{role[0]}{tag}"
        add_user(name, role, PASSWORD, email=f"{name}@example.com")  # type: ignore[arg-type]
    add_user(f"o2{tag}", "operator", PASSWORD)  # a second operator
    base = tmp_path_factory.mktemp("api")
    history = base / "history.ducklake"
    args = ["--history", str(history), "--sync-every", "3600"]
    with serve_ui(args, log=base / "ui.log", env=os.environ, timeout=240) as (url, _proc):
        yield Server(url, history, tag, base / "laptops")


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


def _one_error(out: subprocess.CompletedProcess[str], *words: str) -> None:
    """Refused: exit 8 and one ``error:`` line with ``words`` in it."""
    assert out.returncode == 8, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for word in words:
        assert word in lines[0], lines[0]


def rows_like(history: Path, column: str, value: str) -> list[tuple[str, str, str]]:
    assert column in ("detail", "job_id")  # an allowlisted column
    with open_store(history, read_only=True) as con:
        return [
            (r[0], r[1], r[2])
            for r in con.cursor()
            .execute(
                f"SELECT who, action, source FROM activity WHERE {column} LIKE $v ORDER BY time",
                {"v": value},
            )
            .fetchall()
        ]


def test_later_runs_and_subscriptions_go_through_the_login(server: Server) -> None:
    """``run --in``, ``notify``, ``--list`` and ``--remove`` act on the server as the
    token's user: a viewer subscribes only their own address, an operator any address
    to their own jobs; the laptop has no Prefect credentials or history at all."""
    viewer, operator, admin = (server.user(r) for r in ("viewer", "operator", "admin"))
    for who in (viewer, operator, admin):
        server.login(who)
    _one_error(server.cli(viewer, "run", "ok", "--devices", "t1", "--in", "2h"), "may not run")
    later = server.cli(operator, "run", "ok", "--devices", "t1", "--in", "2h", "--json")
    assert later.returncode == 0, later.stderr
    job = json.loads(later.stdout)
    assert (job["status"], job["owner"]) == ("Pending", operator)
    own, other = f"{viewer}@example.com", "someone@example.com"
    # the viewer: their own address yes, another no, a webhook no
    assert server.cli(viewer, "notify", job["id"], "--email", own.upper()).returncode == 0
    _one_error(
        server.cli(viewer, "notify", job["id"], "--email", other),
        "may not subscribe someone@example.com",
        f"only their own address ({own})",
    )
    _one_error(server.cli(viewer, "notify", job["id"], "--webhook", "http://127.0.0.1:9/h"))
    # the operator: any address to their own job
    assert server.cli(operator, "notify", job["id"], "--email", other).returncode == 0
    listed = server.cli(viewer, "notify", "--list", job["id"], "--json")
    assert listed.returncode == 0, listed.stderr
    emails = sorted(s["email"].lower() for s in json.loads(listed.stdout)["subscribers"])
    assert emails == sorted([own.lower(), other])
    _one_error(server.cli(viewer, "notify", job["id"], "--remove", "--email", other))
    assert server.cli(viewer, "notify", job["id"], "--remove", "--email", own).returncode == 0
    removed = server.cli(operator, "notify", job["id"], "--remove", "--email", other, "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["subscribers"] == []
    assert server.cli(operator, "cancel", job["id"]).returncode == 0
    assert activity_of(server.history, job["id"]) == [
        (operator, "run", "api"),
        (viewer, "notify", "api"),
        (operator, "notify", "api"),
        (viewer, "unsubscribe", "api"),
        (operator, "unsubscribe", "api"),
        (operator, "cancel", "api"),
    ]
    assert not (server.laptop / operator / "history.ducklake").exists()


def test_rules_filters_and_view_go_through_the_login_with_owners(server: Server) -> None:
    viewer, operator, admin = (server.user(r) for r in ("viewer", "operator", "admin"))
    other_op = f"o2{server.tag}"
    for who in (viewer, operator, admin, other_op):
        server.login(who)
    rule, flt = f"r{server.tag}", f"f{server.tag}"
    # rules: an operator's own; another operator may not change it, an admin may
    made = server.cli(operator, "notify", "--filter", "pending", "--email", "a@example.com",
                      "--rule", rule, "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["created_by"] == operator
    _one_error(server.cli(viewer, "notify", "--pause", rule), "may not filters")
    _one_error(server.cli(other_op, "notify", "--pause", rule), "may not filters")
    assert server.cli(admin, "notify", "--pause", rule).returncode == 0
    shown = json.loads(server.cli(viewer, "notify", "--rules", "--json").stdout)
    assert [r["paused"] for r in shown if r["name"] == rule] == [True]
    assert server.cli(operator, "notify", "--remove-rule", rule).returncode == 0
    assert rows_like(server.history, "detail", f"rule {rule}%") == [
        (operator, "rule-add", "api"),
        (admin, "rule-pause", "api"),
        (operator, "rule-remove", "api"),
    ]
    # saved filters: the owner is recorded; others may not replace or delete it
    assert server.cli(operator, "filters", "save", flt, "--status", "Error").returncode == 0
    _one_error(server.cli(viewer, "filters", "save", f"v{flt}", "--status", "Error"))
    _one_error(server.cli(other_op, "filters", "save", flt, "--status", "Pending"))
    _one_error(server.cli(other_op, "filters", "delete", flt), f"{other_op} (operator)")
    listed = json.loads(server.cli(viewer, "filters", "--json").stdout)
    mine = [f for f in listed if f["name"] == flt]
    assert [(f["owner"], f["spec"]["statuses"]) for f in mine] == [(operator, ["Error"])]
    with open_store(server.history, read_only=True) as con:
        owner = (
            con.cursor()
            .execute("SELECT owner FROM saved_filters WHERE name = $n", {"n": flt})
            .fetchall()
        )
    assert owner == [(operator,)]
    assert server.cli(admin, "filters", "delete", flt).returncode == 0
    assert rows_like(server.history, "detail", f"{flt}%") == [
        (operator, "filter-save", "api"),
        (admin, "filter-delete", "api"),
    ]
    # view settings are shared: admins only; everyone reads the server's
    _one_error(server.cli(operator, "view", "set", "--limit", "77"), "may not view_settings")
    assert server.cli(admin, "view", "set", "--limit", "77").returncode == 0
    seen = server.cli(viewer, "view", "show", "--json")
    assert seen.returncode == 0 and json.loads(seen.stdout)["limit"] == 77
    assert server.cli(admin, "view", "reset").returncode == 0
    assert json.loads(server.cli(viewer, "view", "show", "--json").stdout)["limit"] != 77
    assert rows_like(server.history, "detail", "limit=77")[-1] == (admin, "view-set", "api")
