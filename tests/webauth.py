"""Signing the tests in to the web view, once: accounts in the run's WSJOBS_HOME.

Every page but the sign-in page needs a session now (issue 18). Tests that are not about
signing in get one the way the server makes them — a row in the accounts file — instead of
typing a password each time (an argon2 verification costs ~0.1-0.8 s): the cookie is put
in the browser context or the HTTP client. The sign-in form itself is tested in
tests/test_web_auth.py.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from workspaces_jobs.identity import add_user, get_user
from workspaces_jobs.identity.sessions import new_session
from workspaces_jobs.settings import get_settings
from workspaces_jobs.web.gate import SESSION_COOKIE

PASSWORD = "test-password-123"
#: The run's accounts: name -> role.
USERS = {"admin": "admin", "olga": "operator", "oscar": "operator", "vic": "viewer"}


def ensure_users() -> None:
    """Create the run's accounts in the current WSJOBS_HOME (once; cheap afterwards)."""
    for name, role in USERS.items():
        if get_user(name) is None:
            add_user(name, role, PASSWORD)  # type: ignore[arg-type]


def session_for(name: str = "admin") -> str:
    """A fresh session id for ``name``, as a sign-in would make it."""
    ensure_users()
    idle = get_settings().session_idle_minutes * 60
    return new_session(name, now=time.time(), idle_seconds=idle)


def signed_in(client: Any, name: str = "admin") -> Any:
    """Give an httpx / Starlette TestClient a session of ``name``; returns the client."""
    host = urlsplit(str(client.base_url)).hostname or "127.0.0.1"
    client.cookies.set(SESSION_COOKIE, session_for(name), domain=host, path="/")
    return client


def signed_in_context(browser: Any, base_url: str, name: str = "admin", **options: Any) -> Any:
    """A new Chromium context (``options`` as for ``browser.new_context``) signed in as
    ``name``."""
    context = browser.new_context(base_url=base_url, **options)
    context.add_cookies([{"name": SESSION_COOKIE, "value": session_for(name), "url": base_url}])
    return context
