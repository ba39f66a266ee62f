"""Local accounts, personal API tokens and the file that holds them.

Everything lives in ``$WSJOBS_HOME/accounts.db`` (SQLite), created readable by its owner
only (0600) and tightened back if someone widened it: it holds password hashes, token
hashes and session hashes, and it is deliberately NOT part of the history (the history is
an audit file people read and export). Passwords are hashed with argon2id
(``argon2-cffi``'s defaults, RFC 9106's low-memory profile) and re-hashed on sign-in when
those defaults move. Tokens and session ids are long random strings, so a plain SHA-256 of
them is enough to make a stolen file useless; the plaintext is shown once and never stored.

:func:`verify_password` answers ``None`` for an unknown user, a wrong password and a
disabled account alike, and spends the same argon2 work on each (an unknown name is checked
against a dummy hash), so neither the answer nor its timing tells which part was wrong.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, cast, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from workspaces_jobs.errors import BadInput, NotFound, WriteFailed
from workspaces_jobs.settings import get_settings

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)

#: Environment variable that sets the first admin's password instead of a generated one.
ADMIN_PASSWORD_ENV = "WSJOBS_ADMIN_PASSWORD"
#: The account the first start creates.
FIRST_ADMIN = "admin"
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_TOKEN_PREFIX = "wsjobs_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""

#: Changes to the accounts file after its first schema, in order: the file's
#: ``PRAGMA user_version`` says how many are applied (SQLite's own counter; this file is
#: not the history, whose migrations are reporting/sql/).
_MIGRATIONS = (
    # 1 (#18): the address a viewer may subscribe (their own), '' when none is set.
    "ALTER TABLE users ADD COLUMN email TEXT NOT NULL DEFAULT ''",
)
#: The columns every user read selects, in :class:`User`'s order.
USER_COLUMNS = "name, role, disabled, email"


@dataclass(frozen=True)
class User:
    """A signed-in (or named) person and what they may do (see :mod:`.roles`)."""

    name: str
    role: Role
    disabled: bool = False
    email: str = ""  # their own address: the one a viewer may subscribe


@dataclass(frozen=True)
class TokenInfo:
    """A personal API token as listed: never the token itself."""

    id: str
    user: str
    label: str
    created: float


def accounts_path() -> Path:
    return get_settings().home / "accounts.db"


def _private_file(path: Path) -> None:
    """Create ``path`` as 0600 if missing; tighten it if someone made it readable by others."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
    except OSError as exc:
        raise WriteFailed(f"cannot create the accounts file {path}: {exc.strerror or exc}") from exc


@contextmanager
def connect() -> Iterator[sqlite3.Connection]:
    """An autocommit connection to the accounts file (schema created on first use).

    Callers that read-then-write open ``BEGIN IMMEDIATE`` themselves; SQLite's own lock
    serialises the CLI and a running web server.
    """
    path = accounts_path()
    _private_file(path)
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        con.executescript(_SCHEMA)
        _migrate(con)
        yield con
    finally:
        con.close()


def _migrate(con: sqlite3.Connection) -> None:
    """Apply the accounts file's pending :data:`_MIGRATIONS`, each with its version, under
    SQLite's write lock (a CLI and a running server may open an old file at once)."""
    if con.execute("PRAGMA user_version").fetchone()[0] >= len(_MIGRATIONS):
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        done = con.execute("PRAGMA user_version").fetchone()[0]
        for version, sql in enumerate(_MIGRATIONS[done:], start=done + 1):
            con.execute(sql)
            con.execute(f"PRAGMA user_version = {int(version)}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    """A real argon2 hash of a random password, verified when the name is unknown."""
    return _hasher().hash(secrets.token_urlsafe(16))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise BadInput(
            f"bad user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise BadInput(f"bad role {role!r}: choose one of {', '.join(ROLES)}")
    return cast(Role, role)


def check_password(password: str) -> str:
    if not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise BadInput(
            f"the password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters; "
            "choose a longer one"
        )
    return password


def _user(row: tuple[str, str, int, str] | tuple[str, str, int]) -> User:
    email = str(row[3]) if len(row) > 3 else ""
    return User(name=row[0], role=cast(Role, row[1]), disabled=bool(row[2]), email=email)


def check_email(email: str) -> str:
    """An account's address, normalised like a subscriber's ('' clears it)."""
    if not email.strip():
        return ""
    from workspaces_jobs.notify.subscriptions import normalize_email

    try:
        return normalize_email(email)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def add_user(name: str, role: Role, password: str, *, email: str = "") -> User:
    """Create an account; a name already taken is bad input (nothing changes)."""
    check_name(name)
    check_role(role)
    email = check_email(email)
    digest = _hasher().hash(check_password(password))
    with connect() as con:
        try:
            con.execute(
                "INSERT INTO users (name, role, hash, disabled, created, email)"
                " VALUES (?, ?, ?, 0, ?, ?)",
                (name, role, digest, time.time(), email),
            )
        except sqlite3.IntegrityError:
            raise BadInput(
                f"user {name!r} exists already: use `wsjobs users passwd {name}` to set a "
                "new password"
            ) from None
    return User(name=name, role=role, email=email)


def set_email(name: str, email: str) -> str:
    """Set (or, with '', clear) the account's own address; returns it normalised."""
    email = check_email(email)
    with connect() as con:
        _must_change(con, "UPDATE users SET email = ? WHERE name = ?", (email, name), name)
    return email


def _must_change(con: sqlite3.Connection, sql: str, args: tuple[object, ...], name: str) -> None:
    if con.execute(sql, args).rowcount == 0:
        raise NotFound(f"no user {name!r}: see `wsjobs users list`")


def set_password(name: str, password: str) -> None:
    """New password; the user's open web sessions end (they sign in again)."""
    digest = _hasher().hash(check_password(password))
    with connect() as con:
        con.execute("BEGIN IMMEDIATE")
        _must_change(con, "UPDATE users SET hash = ? WHERE name = ?", (digest, name), name)
        con.execute("DELETE FROM sessions WHERE user = ?", (name,))
        con.execute("COMMIT")


def set_disabled(name: str, disabled: bool = True) -> None:
    """Disable (or enable) an account: a disabled one cannot sign in, and its sessions end
    and its tokens stop working at once."""
    with connect() as con:
        con.execute("BEGIN IMMEDIATE")
        _must_change(
            con, "UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name), name
        )
        if disabled:
            con.execute("DELETE FROM sessions WHERE user = ?", (name,))
        con.execute("COMMIT")


def set_role(name: str, role: Role) -> None:
    check_role(role)
    with connect() as con:
        _must_change(con, "UPDATE users SET role = ? WHERE name = ?", (role, name), name)


def list_users() -> list[User]:
    with connect() as con:
        rows = con.execute(f"SELECT {USER_COLUMNS} FROM users ORDER BY name").fetchall()
    return [_user(row) for row in rows]


def get_user(name: str) -> User | None:
    with connect() as con:
        row = con.execute(f"SELECT {USER_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
    return _user(row) if row else None


def verify_password(name: str, password: str) -> User | None:
    """The user when ``password`` is theirs and the account is enabled, else ``None``.

    Unknown, wrong and disabled cost the same argon2 verification and give the same answer.
    """
    with connect() as con:
        row = con.execute(
            f"SELECT {USER_COLUMNS}, hash FROM users WHERE name = ?", (name,)
        ).fetchone()
    hasher = _hasher()
    try:
        hasher.verify(row[4] if row else _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or row[2]:
        return None
    if hasher.check_needs_rehash(row[4]):
        with connect() as con:
            con.execute(
                "UPDATE users SET hash = ? WHERE name = ? AND hash = ?",
                (hasher.hash(password), name, row[4]),
            )
    return _user((row[0], row[1], row[2], row[3]))


def ensure_admin() -> str | None:
    """First start: create ``admin`` when there is no account at all.

    Returns the generated password, to be printed once by the caller; ``None`` when
    accounts exist already, or when the password came from ``WSJOBS_ADMIN_PASSWORD``
    (nothing to show: whoever set it knows it; it is never echoed).
    """
    from_env = os.environ.get(ADMIN_PASSWORD_ENV) or ""
    password = check_password(from_env) if from_env else secrets.token_urlsafe(15)
    with connect() as con:
        if con.execute("SELECT 1 FROM users LIMIT 1").fetchone():
            return None
        digest = _hasher().hash(password)
        con.execute("BEGIN IMMEDIATE")
        if con.execute("SELECT 1 FROM users LIMIT 1").fetchone():
            con.execute("ROLLBACK")
            return None
        con.execute(
            "INSERT INTO users (name, role, hash, disabled, created) VALUES (?, 'admin', ?, 0, ?)",
            (FIRST_ADMIN, digest, time.time()),
        )
        con.execute("COMMIT")
    return None if from_env else password


def first_start_notice() -> str | None:
    """The lines a starting server prints once when it created the first admin, else None."""
    password = ensure_admin()
    if password is None:
        return None
    return (
        f"Created the first account: user {FIRST_ADMIN!r}, password {password}\n"
        "It is shown only this once: sign in and add accounts with `wsjobs users add`."
    )


def issue_token(name: str, label: str = "") -> str:
    """A new personal API token for ``name``; only its SHA-256 is kept, shown once here."""
    if get_user(name) is None:
        raise NotFound(f"no user {name!r}: see `wsjobs users list`")
    token_id = secrets.token_hex(4)
    token = f"{_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    with connect() as con:
        con.execute(
            "INSERT INTO tokens (id, user, hash, label, created) VALUES (?, ?, ?, ?, ?)",
            (token_id, name, _sha256(token), label[:200], time.time()),
        )
    return token


def revoke_token(token_or_id: str) -> bool:
    """Delete a token given itself or its id; False when there was none."""
    with connect() as con:
        cur = con.execute(
            "DELETE FROM tokens WHERE id = ? OR hash = ?", (token_or_id, _sha256(token_or_id))
        )
    return cur.rowcount > 0


def list_tokens(name: str | None = None) -> list[TokenInfo]:
    with connect() as con:
        rows = con.execute(
            "SELECT id, user, label, created FROM tokens WHERE ? IS NULL OR user = ? "
            "ORDER BY created",
            (name, name),
        ).fetchall()
    return [TokenInfo(id=r[0], user=r[1], label=r[2], created=r[3]) for r in rows]


def user_for_token(token: str) -> User | None:
    """The enabled user a token belongs to, else ``None``."""
    if not token.startswith(_TOKEN_PREFIX):
        return None
    with connect() as con:
        row = con.execute(
            "SELECT u.name, u.role, u.disabled, u.email FROM tokens t JOIN users u"
            " ON u.name = t.user "
            "WHERE t.hash = ?",
            (_sha256(token),),
        ).fetchone()
    if row is None or row[2]:
        return None
    return _user(row)
