"""The web view's sign-in, in-process (Starlette's TestClient) on a pinned clock.

The app is the real one over a real (empty) history file and the run's accounts file;
only the clock the sessions and the throttle read is pinned, so idle expiry and the
sign-in throttle are checked at exact instants. The same flows in Chromium against a
``wsjobs ui`` process are in tests/test_web_auth.py.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from webauth import PASSWORD, ensure_users, signed_in

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.web.app import create_app
from workspaces_jobs.web.auth import WRONG
from workspaces_jobs.web.gate import (
    ADDRESS_FAILURES,
    SESSION_COOKIE,
    THROTTLE_WINDOW,
    USER_FAILURES,
    AuthConfig,
    safe_next,
)
from workspaces_jobs.web.state import WebState

BASE = "http://127.0.0.1:8787"
IDLE = 600.0


class Clock:
    """Pinned at the real instant the test starts (sessions made by webauth use it too)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_users()
    path = tmp_path_factory.mktemp("signin") / "history.duckdb"
    with open_store(path):
        pass
    return path


def _app(history: Path, clock: Clock, **options: object) -> TestClient:
    config = AuthConfig(idle_seconds=IDLE, clock=clock, **options)  # type: ignore[arg-type]
    app = create_app(WebState(history, sync_every=0), auth_config=config)
    return TestClient(app, base_url=BASE)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(history: Path, clock: Clock) -> Iterator[TestClient]:
    with _app(history, clock) as c:
        yield c


def _csrf(client: TestClient, path: str = "/signin") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found, "no form token on the page"
    return found.group(1)


def _sign_in(client: TestClient, name: str, password: str, next_: str = "/") -> Any:
    return client.post(
        "/signin",
        data={"csrf": _csrf(client), "name": name, "password": password, "next": next_},
        follow_redirects=False,
    )


def _problem(html: str) -> str:
    found = re.search(r'id="signin-problem">([^<]*)<', html)
    return found.group(1) if found else ""


def test_every_page_but_sign_in_needs_a_session(client: TestClient) -> None:
    asked = client.get("/jobs/abc?tab=logs", follow_redirects=False)
    assert asked.status_code == 303
    target = urlsplit(asked.headers["location"])
    assert target.path == "/signin"
    assert parse_qs(target.query)["next"] == ["/jobs/abc?tab=logs"]
    assert client.post("/jobs/cancel", data={"job": "x"}).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    page = client.get("/signin")
    assert page.status_code == 200 and 'id="signin-form"' in page.text
    assert 'id="nav-run"' not in page.text  # nothing of the view before sign-in


def test_sign_in_sets_a_new_http_only_lax_session_and_goes_to_next(client: TestClient) -> None:
    first = _sign_in(client, "olga", PASSWORD, "/schedules")
    assert first.status_code == 303 and first.headers["location"] == "/schedules"
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    old = client.cookies[SESSION_COOKIE]
    page = client.get("/")
    assert page.status_code == 200 and 'id="signed-in-as">olga (operator)<' in page.text
    again = _sign_in(client, "olga", PASSWORD)
    assert again.status_code == 303
    new = client.cookies[SESSION_COOKIE]
    assert new != old  # renewed at sign-in
    client.cookies.set(SESSION_COOKIE, old, domain="127.0.0.1", path="/")
    assert client.get("/", follow_redirects=False).status_code == 303  # the old one is gone


def test_over_tls_the_cookie_is_secure(history: Path, clock: Clock) -> None:
    config = AuthConfig(idle_seconds=IDLE, clock=clock)
    app = create_app(WebState(history, sync_every=0), auth_config=config)
    with TestClient(app, base_url="https://127.0.0.1:8787") as c:
        done = _sign_in(c, "olga", PASSWORD)
        assert done.status_code == 303
        assert "secure" in done.headers["set-cookie"].lower()


def test_unknown_user_and_wrong_password_get_the_same_401(client: TestClient) -> None:
    wrong = _sign_in(client, "olga", "not-the-password")
    unknown = _sign_in(client, "nobody-at-all", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert _problem(wrong.text) == _problem(unknown.text) == WRONG
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("/jobs/1?tab=logs", "/jobs/1?tab=logs"),
        ("/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/signin", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_next_is_a_path_of_this_site_only(asked: str | None, kept: str) -> None:
    assert safe_next(asked) == kept


def test_an_idle_session_expires_and_sign_in_keeps_the_page(
    client: TestClient, clock: Clock
) -> None:
    # The Jobs list reads only the history: no page here may need the Prefect API (a pure
    # test; /rules would start the managed server, ~50 s on a loaded machine).
    assert _sign_in(client, "olga", PASSWORD).status_code == 303
    clock.now += IDLE - 1
    assert client.get("/", follow_redirects=False).status_code == 200  # used: renewed
    clock.now += IDLE - 1
    assert client.get("/", follow_redirects=False).status_code == 200
    clock.now += IDLE + 1
    gone = client.get("/?age=week", follow_redirects=False)
    assert gone.status_code == 303
    target = urlsplit(gone.headers["location"])
    assert parse_qs(target.query) == {"next": ["/?age=week"], "expired": ["1"]}
    page = client.get(gone.headers["location"])
    assert "Your session has ended" in _problem(page.text)
    assert 'name="next" value="/?age=week"' in page.text
    back = _sign_in(client, "olga", PASSWORD, "/?age=week")
    assert back.headers["location"] == "/?age=week"


def test_sign_in_is_throttled_per_user_then_allowed_again(client: TestClient, clock: Clock) -> None:
    for _ in range(USER_FAILURES):
        assert _sign_in(client, "oscar", "wrong-password").status_code == 401
    blocked = _sign_in(client, "oscar", PASSWORD)  # even the right password
    assert blocked.status_code == 429
    assert "Too many sign-in attempts: try again in 15 minutes." == _problem(blocked.text)
    assert SESSION_COOKIE not in client.cookies
    # Another user from the same address is not blocked by oscar's failures.
    assert _sign_in(client, "olga", PASSWORD).status_code == 303
    clock.now += THROTTLE_WINDOW + 1
    assert _sign_in(client, "oscar", PASSWORD).status_code == 303


def test_sign_in_is_throttled_per_address(client: TestClient, clock: Clock) -> None:
    for i in range(ADDRESS_FAILURES):  # unknown names: each costs the dummy hash
        assert _sign_in(client, f"guess{i}", "wrong-password").status_code == 401
    assert _sign_in(client, "olga", PASSWORD).status_code == 429
    clock.now += THROTTLE_WINDOW + 1
    assert _sign_in(client, "olga", PASSWORD).status_code == 303


def test_sign_out_ends_the_session(client: TestClient) -> None:
    signed_in(client, "olga")
    sid = client.cookies[SESSION_COOKIE]
    token = _csrf(client, "/")
    assert client.post("/signout", data={}).status_code == 403  # CSRF applies
    out = client.post("/signout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    client.cookies.set(SESSION_COOKIE, sid, domain="127.0.0.1", path="/")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_roles_refuse_forged_posts_and_hide_the_buttons(client: TestClient, history: Path) -> None:
    signed_in(client, "vic")
    page = client.get("/")
    assert page.status_code == 200
    for hidden in ('id="cancel"', 'id="reset-view"', 'id="save-filter"', 'id="nav-run"'):
        assert hidden not in page.text, hidden
    token = _csrf(client, "/")
    forged = [
        ("/jobs/cancel", {"job": "00000000-0000-0000-0000-000000000000"}),
        ("/jobs/kill", {"job": "00000000-0000-0000-0000-000000000000", "confirm": "yes"}),
        ("/jobs/rerun", {"job": "00000000-0000-0000-0000-000000000000", "confirm": "yes"}),
        ("/view/reset", {}),
        ("/filters/save", {"name": "mine", "q": "x"}),
        ("/filters/delete", {"name": "mine"}),
        ("/run/ok", {"all": "1", "when": "now"}),
        ("/schedules/change", {"name": "x", "op": "delete"}),
        ("/rules/add", {"filter": "pending", "email": "a@example.com"}),
        ("/jobs/00000000-0000-0000-0000-000000000000/notes", {"text": "a viewer's note"}),
    ]
    for path, data in forged:
        refused = client.post(path, data={**data, "csrf": token}, follow_redirects=False)
        assert refused.status_code == 403, path
        assert "vic (viewer) may not" in refused.text, path
    assert client.get("/run", follow_redirects=False).status_code == 403
    signed_in(client, "olga")
    page = client.get("/")
    assert 'id="cancel"' in page.text and 'id="save-filter"' in page.text
    assert 'id="reset-view"' not in page.text  # shared view settings: admins only
    refused = client.post("/view/reset", data={"csrf": token}, follow_redirects=False)
    assert refused.status_code == 403 and "only admins may" in refused.text
    signed_in(client, "admin")
    assert 'id="reset-view"' in client.get("/").text
    done = client.post("/view/reset", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    with open_store(history, read_only=True) as con:  # who did it: the signed-in user, web
        rows = (
            con.cursor()
            .execute("SELECT who, source FROM activity WHERE action = 'view-reset'")
            .fetchall()
        )
    assert rows == [("admin", "web")]


def test_a_trusted_proxy_header_signs_in_and_others_are_ignored(
    history: Path, clock: Clock
) -> None:
    # TestClient's connection comes from the address "testclient".
    trusted = {"trusted_proxies": frozenset({"testclient"}), "proxy_header": "x-forwarded-user"}
    with _app(history, clock, **trusted) as c:
        page = c.get("/", headers={"X-Forwarded-User": "vic"}, follow_redirects=False)
        assert page.status_code == 200 and 'id="signed-in-as">vic (viewer)<' in page.text
        unknown = c.get("/", headers={"X-Forwarded-User": "mallory"}, follow_redirects=False)
        assert unknown.status_code == 303
    other = {"trusted_proxies": frozenset({"10.0.0.5"}), "proxy_header": "x-forwarded-user"}
    with _app(history, clock, **other) as c:
        forged = c.get("/", headers={"X-Forwarded-User": "admin"}, follow_redirects=False)
        assert forged.status_code == 303  # not from the proxy: the header means nothing
    with _app(history, clock) as c:  # off by default
        assert c.get("/", headers={"X-Forwarded-User": "admin"}).url.path == "/signin"


def test_passwords_and_session_ids_never_reach_the_logs(
    client: TestClient, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    _sign_in(client, "olga", "a-wrong-secret-pw")
    _sign_in(client, "olga", PASSWORD)
    sid = client.cookies[SESSION_COOKIE]
    client.get("/")
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    for secret in ("a-wrong-secret-pw", PASSWORD, sid):
        assert secret not in text
