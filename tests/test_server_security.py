"""The managed server answers only this product and its own UI (the session's server).

Real parts only: the session's managed Prefect server, plain httpx and websockets as an
unauthenticated local program would use them, and headless Chromium (Debian's
``chromium`` through playwright's ``executable_path``) for what a web page can do: a page
on another loopback origin (a real HTTP server on another port), a DNS-rebinding name
(Chromium's ``--host-resolver-rules`` maps it to 127.0.0.1), and the Prefect UI itself.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from workspaces_jobs import server
from workspaces_jobs.jobs import job_link, submit_job, wait_job

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api(prefect_server: str) -> str:
    url = prefect_server
    assert url.startswith("http://127.0.0.1:")
    return url


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=60, **kwargs)  # a loaded CI machine answers slowly


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=60, **kwargs)


def auth() -> tuple[str, str]:
    user, _, password = server.auth_string().partition(":")
    return user, password


def csrf(api: str) -> dict[str, str]:
    """The CSRF headers Prefect's client fetches before a POST (credentials needed)."""
    client = str(uuid.uuid4())
    response = get(f"{api}/csrf-token", params={"client": client}, auth=auth())
    assert response.status_code == 200, response.text
    return {"Prefect-Csrf-Token": response.json()["token"], "Prefect-Csrf-Client": client}


# --- plain programs ---------------------------------------------------------------------------


def test_credentials_are_generated_private_and_required(api: str) -> None:
    path = server.auth_file()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o077 == 0  # the folder with the database too
    assert os.environ["PREFECT_API_AUTH_STRING"] == server.auth_string()  # clients get it
    assert get(f"{api}/admin/version").status_code == 401
    assert get(f"{api}/csrf-token", params={"client": "x"}).status_code == 401
    assert get(f"{api}/admin/version", auth=("wsjobs", "guess")).status_code == 401
    body = {"limit": 1}
    for guess in (None, ("wsjobs", "guess")):  # no token without credentials: refused
        read = post(f"{api}/flow_runs/filter", json=body, auth=guess)
        write = post(f"{api}/variables/", json={"name": "nope", "value": 1}, auth=guess)
        assert read.status_code in (401, 403) and write.status_code in (401, 403)
    no_token = post(f"{api}/flow_runs/filter", json=body, auth=auth())
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    ok = post(f"{api}/flow_runs/filter", json=body, auth=auth(), headers=csrf(api))
    assert ok.status_code == 200
    assert get(f"{api}/admin/version", auth=auth()).status_code == 200
    assert get(f"{api}/health").status_code == 200  # Prefect leaves health open


@pytest.mark.parametrize(
    "host", ["evil.example:{port}", "127.0.0.1:1", "127.0.0.1", "localhost.evil.example:{port}"]
)
def test_a_foreign_host_header_is_refused(api: str, host: str) -> None:
    port = api.split(":")[2].split("/")[0]
    response = get(f"{api}/health", headers={"Host": host.format(port=port)})
    assert response.status_code == 400 and "Invalid host header" in response.text
    ok = get(f"{api}/health", headers={"Host": f"localhost:{port}"})
    assert ok.status_code == 200


def test_a_foreign_origin_is_refused_even_with_credentials(api: str) -> None:
    port = api.split(":")[2].split("/")[0]
    for origin in ("http://127.0.0.1:8000", "null", f"http://localhost.evil:{port}"):
        response = post(f"{api}/flow_runs/filter", json={}, auth=auth(), headers={"Origin": origin})
        assert response.status_code == 403, origin
        assert "access-control-allow-origin" not in response.headers
    own = post(
        f"{api}/flow_runs/filter",
        json={"limit": 1},
        auth=auth(),
        headers={"Origin": f"http://127.0.0.1:{port}", **csrf(api)},
    )
    assert own.status_code == 200
    assert own.headers["access-control-allow-origin"] == f"http://127.0.0.1:{port}"


def test_websockets_refuse_a_foreign_origin(api: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    url = api.replace("http://", "ws://") + "/events/out"

    async def attempt(origin: str) -> int:
        try:
            async with connect(url, origin=origin, subprotocols=["prefect"]):  # type: ignore[arg-type,list-item]
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt("http://127.0.0.1:8000")) == 403
    port = api.split(":")[2].split("/")[0]
    assert asyncio.run(attempt(f"http://127.0.0.1:{port}")) == 101  # then Prefect's own auth


# --- a browser --------------------------------------------------------------------------------

ATTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>attack</title><script>
async function attempt(name, url, init) {
  try { const r = await fetch(url, init); return [name, r.status, await r.text()]; }
  catch (e) { return [name, "blocked", String(e)]; }
}
window.results = (async () => {
  const api = API, auth = AUTH, json = {"Content-Type": "application/json"};
  return Promise.all([
    attempt("health", api + "/health", {}),
    attempt("read", api + "/flow_runs/filter", {method: "POST", headers: json, body: "{}"}),
    attempt("read with credentials", api + "/flow_runs/filter",
            {method: "POST", headers: {...json, Authorization: "Basic " + btoa(auth)},
             body: "{}"}),
    attempt("write", api + "/variables/", {method: "POST", headers: json,
            body: JSON.stringify({name: VAR, value: "x"})}),
    attempt("write with credentials", api + "/variables/", {method: "POST",
            headers: {...json, Authorization: "Basic " + btoa(auth)},
            body: JSON.stringify({name: VAR, value: "x"})}),
    attempt("write without cors", api + "/variables/", {method: "POST", mode: "no-cors",
            headers: {"Content-Type": "text/plain"},
            body: JSON.stringify({name: VAR, value: "x"})}),
  ]);
})();
</script>"""


@pytest.fixture(scope="module")
def attacker(api: str) -> Iterator[tuple[str, str]]:
    """A real HTTP server on another loopback port serving the attack page."""
    variable = f"pwned-{uuid.uuid4().hex[:8]}"
    page = (
        ATTACK_PAGE.replace("API", json.dumps(api), 1)
        .replace("AUTH", json.dumps(server.auth_string()), 1)
        .replace("VAR", json.dumps(variable))
        .encode()
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", variable
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: apt-get install chromium (scripts/test does)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--host-resolver-rules=MAP rebind.test 127.0.0.1",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()


def _variable_exists(api: str, name: str) -> bool:
    response = get(f"{api}/variables/name/{name}", auth=auth())
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def test_a_page_on_another_origin_reads_and_writes_nothing(
    api: str, attacker: tuple[str, str], page: Any
) -> None:
    url, variable = attacker
    page.goto(url)
    results = {name: (status, body) for name, status, body in page.evaluate("window.results")}
    assert set(results) == {
        "health",
        "read",
        "read with credentials",
        "write",
        "write with credentials",
        "write without cors",
    }
    for name, (status, body) in results.items():
        if name == "write without cors":  # an opaque answer: sent, never readable
            assert (status, body) == (0, ""), (name, status, body)
        else:  # the browser blocks the answer (no CORS grant for this origin)
            assert status == "blocked", (name, status, body)
        assert "flow_run" not in body and "status" not in body
    assert not _variable_exists(api, variable)  # nothing was written, with or without auth


def test_dns_rebinding_gets_nothing(api: str, page: Any) -> None:
    port = api.split(":")[2].split("/")[0]
    response = page.goto(f"http://rebind.test:{port}/api/health")
    assert response.status == 400
    assert "Invalid host header" in page.locator("body").inner_text()
    ui = page.goto(f"http://rebind.test:{port}/")
    assert ui.status == 400


def test_the_prefect_ui_logs_in_once_and_shows_the_job(api: str, page: Any) -> None:
    job_id = submit_job("ok", target=["t1"], info="seen in the Prefect UI")
    assert wait_job(job_id, timeout=120).value == "Completed"
    link = job_link(job_id)
    assert link.startswith(api.removesuffix("/api"))
    page.goto(link)  # the printed link: a browser without credentials is sent to log in
    page.wait_for_url("**/login?redirect=*")
    page.get_by_placeholder("admin:pass").fill(server.auth_string())
    page.get_by_role("button", name="Login").click()
    page.get_by_text("seen in the Prefect UI").first.wait_for()
    page.get_by_text("Completed", exact=True).first.wait_for()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "prefect-ui-job.png"))
    page.goto(link)  # logged in: the link opens the job directly
    page.get_by_text("seen in the Prefect UI").first.wait_for()
    assert "/login" not in page.url
