"""Server-side web sessions, kept in the accounts file.

The browser holds only a random id (a cookie); the server keeps its SHA-256, whose user it
is and when it was last used. A session unused for longer than the idle limit is gone
(checked on use, swept at each sign-in). Times come from the caller's clock (epoch
seconds) so tests pin them; nothing here reads the wall clock itself.
"""

from __future__ import annotations

import secrets

from workspaces_jobs.identity.accounts import User, _sha256, _user, connect

#: ``last_seen`` is written at most this often per session (a page load is not a write).
TOUCH_EVERY = 30.0


def new_session(name: str, *, now: float, idle_seconds: float) -> str:
    """Open a session for ``name`` and return its id (the cookie value; never logged)."""
    sid = secrets.token_urlsafe(32)
    with connect() as con:
        con.execute("DELETE FROM sessions WHERE last_seen < ?", (now - idle_seconds,))
        con.execute(
            "INSERT INTO sessions (hash, user, created, last_seen) VALUES (?, ?, ?, ?)",
            (_sha256(sid), name, now, now),
        )
    return sid


def session_user(sid: str, *, now: float, idle_seconds: float) -> User | None:
    """The enabled user of a live session, else ``None`` (an expired one is deleted)."""
    if not sid:
        return None
    digest = _sha256(sid)
    with connect() as con:
        row = con.execute(
            "SELECT u.name, u.role, u.disabled, s.last_seen, u.email FROM sessions s "
            "JOIN users u ON u.name = s.user WHERE s.hash = ?",
            (digest,),
        ).fetchone()
        if row is None:
            return None
        if now - row[3] > idle_seconds or row[2]:
            con.execute("DELETE FROM sessions WHERE hash = ?", (digest,))
            return None
        if now - row[3] >= TOUCH_EVERY:
            con.execute("UPDATE sessions SET last_seen = ? WHERE hash = ?", (now, digest))
    return _user((row[0], row[1], row[2], row[4]))


def end_session(sid: str) -> None:
    if sid:
        with connect() as con:
            con.execute("DELETE FROM sessions WHERE hash = ?", (_sha256(sid),))
