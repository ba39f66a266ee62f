"""Accounts, tokens, sessions and the role table (pure: a temporary home, no server)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from workspaces_jobs import identity
from workspaces_jobs.errors import BadInput, Forbidden, NotFound
from workspaces_jobs.identity import User, accounts, roles, sessions


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WSJOBS_HOME", str(tmp_path))
    monkeypatch.delenv(accounts.ADMIN_PASSWORD_ENV, raising=False)
    return tmp_path


def test_accounts_file_is_private_and_holds_no_plaintext(home: Path) -> None:
    identity.add_user("alice", "operator", "correct horse battery")
    token = identity.issue_token("alice", "laptop")
    sid = sessions.new_session("alice", now=1000.0, idle_seconds=60)
    path = home / "accounts.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    for secret in ("correct horse battery", token, sid):
        assert secret.encode() not in raw
    with sqlite3.connect(path) as con:
        (digest,) = con.execute("SELECT hash FROM users WHERE name='alice'").fetchone()
        (token_hash,) = con.execute("SELECT hash FROM tokens").fetchone()
    assert digest.startswith("$argon2id$")
    assert len(token_hash) == 64 and token_hash != token


def test_widened_file_is_tightened(home: Path) -> None:
    identity.add_user("alice", "viewer", "password-1")
    path = home / "accounts.db"
    path.chmod(0o644)
    identity.list_users()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_verify_password_same_none_for_unknown_wrong_disabled(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity.add_user("alice", "operator", "password-1")
    identity.add_user("bob", "viewer", "password-2")
    identity.set_disabled("bob")
    calls: list[str] = []
    hasher = accounts._hasher()
    real = type(hasher).verify

    def counting(self: object, digest: str, password: str) -> bool:
        calls.append(digest[:9])
        return real(hasher, digest, password)

    monkeypatch.setattr(type(hasher), "verify", counting)
    assert identity.verify_password("alice", "password-1") == User("alice", "operator")
    assert identity.verify_password("alice", "wrong-password") is None
    assert identity.verify_password("nobody", "password-1") is None
    assert identity.verify_password("bob", "password-2") is None
    # One argon2 verification each: an unknown name costs what a known one costs.
    assert calls == ["$argon2id"] * 4


def test_bad_input(home: Path) -> None:
    identity.add_user("alice", "viewer", "password-1")
    with pytest.raises(BadInput, match="exists already"):
        identity.add_user("alice", "admin", "password-2")
    with pytest.raises(BadInput, match="bad role"):
        identity.add_user("carol", "root", "password-2")  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="bad user name"):
        identity.add_user("a b;rm", "viewer", "password-2")
    with pytest.raises(BadInput, match="8 to 1024 characters"):
        identity.add_user("carol", "viewer", "short")
    with pytest.raises(NotFound, match="no user 'nobody'"):
        identity.set_password("nobody", "password-3")
    assert [u.name for u in identity.list_users()] == ["alice"]
    assert identity.get_user("alice") == User("alice", "viewer")


def test_password_change_and_disable_end_sessions(home: Path) -> None:
    identity.add_user("alice", "operator", "password-1")
    sid = sessions.new_session("alice", now=0.0, idle_seconds=60)
    assert sessions.session_user(sid, now=1.0, idle_seconds=60) == User("alice", "operator")
    identity.set_password("alice", "password-new")
    assert sessions.session_user(sid, now=2.0, idle_seconds=60) is None
    assert identity.verify_password("alice", "password-1") is None
    assert identity.verify_password("alice", "password-new") is not None
    sid = sessions.new_session("alice", now=3.0, idle_seconds=60)
    identity.set_disabled("alice")
    assert sessions.session_user(sid, now=4.0, idle_seconds=60) is None
    identity.set_disabled("alice", False)
    assert identity.verify_password("alice", "password-new") is not None


def test_session_idle_expiry_with_pinned_clock(home: Path) -> None:
    identity.add_user("alice", "viewer", "password-1")
    sid = sessions.new_session("alice", now=100.0, idle_seconds=60)
    assert sessions.session_user(sid, now=159.0, idle_seconds=60) is not None  # touched
    assert sessions.session_user(sid, now=218.0, idle_seconds=60) is not None
    assert sessions.session_user(sid, now=279.0, idle_seconds=60) is None
    assert sessions.session_user(sid, now=280.0, idle_seconds=60) is None  # deleted
    sessions.end_session("not-a-session")
    other = sessions.new_session("alice", now=300.0, idle_seconds=60)
    sessions.end_session(other)
    assert sessions.session_user(other, now=301.0, idle_seconds=60) is None


def test_ensure_admin_once(home: Path) -> None:
    password = identity.ensure_admin()
    assert password and len(password) >= 16
    assert identity.verify_password("admin", password) == User("admin", "admin")
    assert identity.ensure_admin() is None
    assert [u.name for u in identity.list_users()] == ["admin"]


def test_ensure_admin_from_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(accounts.ADMIN_PASSWORD_ENV, "from-the-environment")
    assert identity.ensure_admin() is None  # nothing to show: it is never echoed
    assert identity.verify_password("admin", "from-the-environment") is not None
    notice = accounts.first_start_notice()
    assert notice is None


def test_first_start_notice_shows_password_once(home: Path) -> None:
    notice = accounts.first_start_notice()
    assert notice and "user 'admin', password " in notice
    password = notice.split("password ", 1)[1].split()[0]
    assert identity.verify_password("admin", password) is not None
    assert accounts.first_start_notice() is None


def test_tokens(home: Path) -> None:
    identity.add_user("alice", "operator", "password-1")
    token = identity.issue_token("alice", "laptop")
    assert identity.user_for_token(token) == User("alice", "operator")
    assert identity.user_for_token(token + "x") is None
    assert identity.user_for_token("not-a-token") is None
    listed = accounts.list_tokens("alice")
    assert [(t.user, t.label) for t in listed] == [("alice", "laptop")]
    identity.set_disabled("alice")
    assert identity.user_for_token(token) is None
    identity.set_disabled("alice", False)
    second = identity.issue_token("alice")
    assert identity.revoke_token(listed[0].id) is True
    assert identity.user_for_token(token) is None
    assert identity.revoke_token(second) is True
    assert identity.revoke_token(second) is False
    with pytest.raises(NotFound):
        identity.issue_token("nobody")


VIEWER = User("vera", "viewer")
OPERATOR = User("otto", "operator")
ADMIN = User("ada", "admin")
GONE = User("gus", "admin", disabled=True)

#: (user, action, owner, allowed)
CASES = [
    (VIEWER, "read", None, True),
    (VIEWER, "export", None, True),
    (VIEWER, "subscribe", None, True),
    (VIEWER, "subscribe", "vera", True),
    (VIEWER, "subscribe", "otto", False),
    (VIEWER, "run", None, False),
    (VIEWER, "cancel", "vera", False),
    (VIEWER, "filters", None, False),
    (VIEWER, "note", None, False),
    (VIEWER, "users", None, False),
    (OPERATOR, "run", None, True),
    (OPERATOR, "schedule", None, True),
    (OPERATOR, "schedule", "otto", True),
    (OPERATOR, "schedule", "ada", False),
    (OPERATOR, "cancel", "otto", True),
    (OPERATOR, "cancel", "ada", False),
    (OPERATOR, "cancel", None, False),
    (OPERATOR, "kill", "otto", True),
    (OPERATOR, "kill", "vera", False),
    (OPERATOR, "rerun", "otto", True),
    (OPERATOR, "rerun", "ada", False),
    (OPERATOR, "notify", "otto", True),
    (OPERATOR, "notify", "ada", False),
    (OPERATOR, "note", "ada", True),
    (OPERATOR, "filters", None, True),
    (OPERATOR, "filters", "ada", False),
    (OPERATOR, "users", None, False),
    (OPERATOR, "view_settings", None, False),
    (ADMIN, "cancel", "otto", True),
    (ADMIN, "kill", None, True),
    (ADMIN, "rerun", "vera", True),
    (ADMIN, "schedule", "otto", True),
    (ADMIN, "users", None, True),
    (ADMIN, "view_settings", None, True),
    (GONE, "read", None, False),
]


@pytest.mark.parametrize(("user", "action", "owner", "expected"), CASES)
def test_role_table(user: User, action: roles.Action, owner: str | None, expected: bool) -> None:
    assert identity.allowed(user, action, owner=owner) is expected
    if expected:
        identity.require(user, action, owner=owner)
    else:
        with pytest.raises(Forbidden):
            identity.require(user, action, owner=owner)


def test_every_action_is_in_the_table() -> None:
    from typing import get_args

    assert set(get_args(roles.Action)) == set(roles.TABLE)


def test_forbidden_says_who_may() -> None:
    with pytest.raises(Forbidden) as caught:
        identity.require(OPERATOR, "cancel", owner="ada")
    text = str(caught.value)
    assert text == (
        "otto (operator) may not cancel ada's job: only the job's owner (an operator) and "
        "admins may"
    )
    assert "\n" not in text and caught.value.exit_code == 8


# --- a viewer subscribes only their own address -----------------------------------------

VERA = User("vera", "viewer", email="Vera@Example.com")
OTTO = User("otto", "operator", email="otto@example.com")
NOMAIL = User("nell", "viewer")
HOOK = "https://chat.example.com/hook"

#: (user, emails, webhooks, job owner, now, allowed)
SUBSCRIPTIONS = [
    (VERA, ["vera@example.COM"], [], "otto", False, True),  # own address, any job, any case
    (VERA, ["someone@example.com"], [], "otto", False, False),
    (VERA, ["someone@example.com"], [], "vera", False, False),  # not even on "own" jobs
    (VERA, [], [HOOK], "otto", False, False),
    (VERA, ["Vera@Example.com"], [], "otto", True, False),  # a summary now acts for the owner
    (NOMAIL, ["nell@example.com"], [], "otto", False, False),  # no address on the account
    (OTTO, ["otto@example.com"], [], "ada", False, True),
    (OTTO, ["team@example.com"], [HOOK], "otto", True, True),  # anything on own jobs
    (OTTO, ["team@example.com"], [], "ada", False, False),
    (OTTO, [], [HOOK], "ada", False, False),
    (ADMIN, ["anyone@example.com"], [HOOK], "otto", True, True),
    (GONE, ["gus@example.com"], [], "gus", False, False),
]


@pytest.mark.parametrize(("user", "emails", "hooks", "owner", "now", "expected"), SUBSCRIPTIONS)
def test_who_may_subscribe_what(
    user: User, emails: list[str], hooks: list[str], owner: str, now: bool, expected: bool
) -> None:
    if expected:
        identity.require_subscription(user, emails=emails, webhooks=hooks, job_owner=owner, now=now)
        return
    with pytest.raises(Forbidden) as caught:
        identity.require_subscription(user, emails=emails, webhooks=hooks, job_owner=owner, now=now)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 8


def test_refusal_names_the_own_address_or_how_to_set_one() -> None:
    with pytest.raises(Forbidden, match=r"only their own address \(Vera@Example.com\)"):
        identity.require_subscription(VERA, emails=["x@example.com"], job_owner="otto")
    with pytest.raises(Forbidden, match=r"wsjobs users set-email nell ADDRESS"):
        identity.require_subscription(NOMAIL, emails=["nell@example.com"], job_owner="otto")


def test_account_email_set_normalised_cleared_and_carried_by_sessions_and_tokens(
    home: Path,
) -> None:
    identity.add_user("vera", "viewer", "password-1", email="vera@example.com")
    token = identity.issue_token("vera")
    sid = sessions.new_session("vera", now=1000.0, idle_seconds=60)
    assert identity.get_user("vera") == User("vera", "viewer", email="vera@example.com")
    assert identity.set_email("vera", " Vera@EXAMPLE.com ") == "Vera@example.com"
    assert identity.user_for_token(token).email == "Vera@example.com"  # type: ignore[union-attr]
    seen = sessions.session_user(sid, now=1001.0, idle_seconds=60)
    assert seen is not None and seen.email == "Vera@example.com"
    verified = identity.verify_password("vera", "password-1")
    assert verified is not None and verified.email == "Vera@example.com"
    assert identity.set_email("vera", "") == ""
    assert identity.get_user("vera").email == ""  # type: ignore[union-attr]
    with pytest.raises(BadInput, match="invalid email address"):
        identity.set_email("vera", "not an address")
    with pytest.raises(BadInput, match="invalid email address"):
        identity.add_user("vic", "viewer", "password-1", email="nope")
    assert identity.get_user("vic") is None  # nothing created
    with pytest.raises(NotFound):
        identity.set_email("nobody", "a@example.com")


def test_an_accounts_file_from_before_emails_is_migrated_in_place(home: Path) -> None:
    """A file made by the first schema (no email column, user_version 0) keeps its users,
    passwords and tokens and gains the column once (the version says so)."""
    path = home / "accounts.db"
    with sqlite3.connect(path) as con:
        con.executescript(
            "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL,"
            " disabled INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);"
        )
        digest = accounts._hasher().hash("old-password")
        con.execute("INSERT INTO users VALUES ('old', 'operator', ?, 0, 1.0)", (digest,))
    path.chmod(0o600)
    assert identity.verify_password("old", "old-password") == User("old", "operator")
    identity.set_email("old", "old@example.com")
    identity.list_users()  # a second open: nothing applied twice
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(accounts._MIGRATIONS)
    assert identity.get_user("old") == User("old", "operator", email="old@example.com")
