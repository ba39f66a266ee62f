"""The web view under test: its server, a headless Chromium, and signed-in sessions.

``serve_ui`` runs ``wsjobs ui`` as a user does (a subprocess on a free port) until it
answers; ``chromium`` is Debian's Chromium through Playwright (the ``browser`` fixture of
``tests/conftest.py``, one per module); ``signed_in_page`` is a page of a new context that
already holds a session. One copy for every browser test (it was written four times).

Signing the tests in to the web view, once: accounts in the run's WSJOBS_HOME.

Every page but the sign-in page needs a session now (issue 18). Tests that are not about
signing in get one the way the server makes them — a row in the accounts file — instead of
typing a password each time (an argon2 verification costs ~0.1-0.8 s): the cookie is put
in the browser context or the HTTP client. The sign-in form itself is tested in
tests/test_web_auth.py.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from proctree import free_port

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


@contextlib.contextmanager
def signed_in_page(
    browser: Any,
    base_url: str,
    name: str = "admin",
    *,
    timeout_ms: float = 30_000,
    **options: Any,
) -> Iterator[Any]:
    """A page of a new context signed in as ``name`` (``options`` as for
    ``browser.new_context``); the context is closed at the end."""
    context = signed_in_context(browser, base_url, name, **options)
    try:
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        yield page
    finally:
        context.close()


#: Debian's Chromium: the tests never run ``playwright install`` (no network at test time).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium through Playwright; a missing Chromium fails, never skips."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: apt-get install chromium (scripts/test does)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def answers(response: httpx.Response) -> bool:
    """``/healthz`` says the server is up (the default readiness of :func:`serve_ui`)."""
    return response.status_code == 200


def synced(response: httpx.Response) -> bool:
    """``/healthz`` says the server's last sync of the history ended well."""
    if response.status_code != 200:
        return False
    health = response.json()
    return bool(health.get("last_sync") and health.get("sync_ok"))


@contextlib.contextmanager
def serve_ui(
    args: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str],
    ready: Callable[[httpx.Response], bool] = answers,
    timeout: float = 180.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``wsjobs ui --port PORT ARGS`` on a free port, its output in ``log``; yields its URL
    and process once ``ready(GET /healthz)`` holds (bounded: a loaded machine starts the
    server, opens the store and creates the first admin), then stops it with Ctrl+C."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workspaces_jobs.cli", "ui", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"wsjobs ui exited {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError, ValueError):  # not up, or half up
                if ready(httpx.get(f"{url}/healthz", timeout=2)):
                    break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"wsjobs ui was not ready in {timeout:.0f} s:\n{log.read_text()}"
                )
            time.sleep(0.3)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
