"""Sign-in, sessions and roles in a real headless Chromium against one ``wsjobs ui`` process.

One module-scoped ``wsjobs ui`` (no background sync: these pages read jobs live from the
session's Prefect server), one browser, a context per user. Accounts are the run's
(tests/webauth.py); what is about the sign-in form goes through the form, the rest gets a
session cookie. The same rules at pinned instants are in tests/test_web_signin.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from webauth import PASSWORD, ensure_users, serve_ui, signed_in_context, signed_in_page

from workspaces_jobs.identity import add_user, get_user
from workspaces_jobs.identity.sessions import new_session
from workspaces_jobs.jobs import read_job, submit_job
from workspaces_jobs.web.gate import SESSION_COOKIE, USER_FAILURES

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web-auth"
IDLE_MINUTES = 5


@dataclass
class Ui:
    url: str
    oscars_job: str  # Pending, never started, owned by the operator oscar
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    ensure_users()
    job = submit_job("ok", target=["t1"], owner="oscar", info="oscar's pending", start=False)
    history = tmp_path_factory.mktemp("web-auth") / "history.duckdb"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "ui.log"
    env = dict(os.environ, WSJOBS_SESSION_IDLE_MINUTES=str(IDLE_MINUTES))
    with serve_ui(
        ["--history", str(history), "--sync-every", "0"], log=log, env=env, timeout=120
    ) as (url, proc):
        yield Ui(url, job, proc)
    assert PASSWORD not in log.read_text()  # nothing secret in the server's output


def _page(context: Any) -> Any:
    page = context.new_page()
    page.set_default_timeout(60_000)
    return page


def _sign_in(page: Any, name: str, password: str) -> None:
    page.fill("#signin-name", name)
    page.fill("#signin-password", password)
    page.click("#signin-button")
    page.wait_for_load_state()


def _problem(page: Any) -> str:
    text: str = page.locator("#signin-problem").inner_text()
    return text


def _forge(page: Any, path: str, form: dict[str, str]) -> Any:
    """A POST from the signed-in browser with the page's valid form token (what a user
    who edits the page, or a script, can send): only the role check stands in the way."""
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    return page.request.post(path, form={**form, "csrf": token}, max_redirects=0)


def test_sign_in_and_sign_out(ui: Ui, browser: Any) -> None:
    context = browser.new_context(base_url=ui.url)
    page = _page(context)
    try:
        page.goto("/rules")
        assert page.url.startswith(f"{ui.url}/signin?next=")
        _sign_in(page, "olga", "not-her-password")
        assert _problem(page) == "Wrong user name or password."
        _sign_in(page, "nobody-here", "not-her-password")
        assert _problem(page) == "Wrong user name or password."
        _sign_in(page, "olga", PASSWORD)
        assert page.url == f"{ui.url}/rules"  # the page asked for
        assert page.locator("#signed-in-as").inner_text() == "olga (operator)"
        cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
        page.screenshot(path=str(ARTIFACTS / "signed-in.png"), full_page=True)
        page.click("#signout")
        page.wait_for_load_state()
        assert page.url == f"{ui.url}/signin"
        page.goto("/")
        assert page.url.startswith(f"{ui.url}/signin")  # the old session is gone
    finally:
        context.close()


def test_an_expired_session_signs_in_again_and_keeps_the_page(ui: Ui, browser: Any) -> None:
    idle = IDLE_MINUTES * 60
    stale = new_session("vic", now=time.time() - 2 * idle, idle_seconds=idle)
    context = browser.new_context(base_url=ui.url)
    context.add_cookies([{"name": SESSION_COOKIE, "value": stale, "url": ui.url}])
    page = _page(context)
    try:
        asked = f"/jobs/{ui.oscars_job}?tab=workspaces"
        page.goto(asked)
        assert page.url.startswith(f"{ui.url}/signin")
        assert "Your session has ended" in _problem(page)
        _sign_in(page, "vic", PASSWORD)
        assert page.url == f"{ui.url}{asked}"
        assert page.locator("#signed-in-as").inner_text() == "vic (viewer)"
    finally:
        context.close()


def test_sign_in_is_rate_limited(ui: Ui, browser: Any) -> None:
    if get_user("rita") is None:
        add_user("rita", "viewer", PASSWORD)
    context = browser.new_context(base_url=ui.url)
    page = _page(context)
    try:
        page.goto("/signin")
        for _ in range(USER_FAILURES):
            _sign_in(page, "rita", "wrong-password")
            assert _problem(page) == "Wrong user name or password."
        _sign_in(page, "rita", PASSWORD)  # the right one, too late
        assert _problem(page).startswith("Too many sign-in attempts: try again in")
        assert page.locator("#signed-in-as").count() == 0
        page.screenshot(path=str(ARTIFACTS / "rate-limited.png"), full_page=True)
    finally:
        context.close()


def test_a_viewer_sees_no_cancel_and_a_forged_post_is_403(ui: Ui, browser: Any) -> None:
    with signed_in_page(browser, ui.url, "vic", timeout_ms=60_000) as page:
        page.goto(f"/jobs/{ui.oscars_job}")
        assert page.locator("#job-status").inner_text().startswith("Pending")
        assert page.locator("#cancel-job").count() == 0
        page.goto("/")
        assert page.locator("#cancel").count() == 0 and page.locator("#nav-run").count() == 0
        refused = _forge(page, "/jobs/cancel", {"job": ui.oscars_job})
        assert refused.status == 403
        assert "vic (viewer) may not cancel" in refused.text()
        assert _forge(page, "/run/ok", {"all": "1", "when": "now"}).status == 403
    assert read_job(ui.oscars_job, with_logs=False).status == "Pending"


def test_an_operator_cannot_cancel_anothers_job_and_an_admin_can(ui: Ui, browser: Any) -> None:
    with signed_in_page(browser, ui.url, "olga", timeout_ms=60_000) as page:
        page.goto(f"/jobs/{ui.oscars_job}")
        assert page.locator("#cancel-job").count() == 0  # oscar's, not hers
        refused = _forge(page, "/jobs/cancel", {"job": ui.oscars_job})
        assert refused.status == 403
        assert "olga (operator) may not cancel oscar&#39;s job" in refused.text()
    assert read_job(ui.oscars_job, with_logs=False).status == "Pending"

    with signed_in_page(browser, ui.url, "admin", timeout_ms=60_000) as page:
        page.goto(f"/jobs/{ui.oscars_job}")
        page.click("#cancel-job")
        page.wait_for_load_state()
        assert "Canceled 1 job" in page.locator("#flash").inner_text()
        assert page.locator("#canceled-by").inner_text() == "admin"  # not the OS user
    assert read_job(ui.oscars_job, with_logs=False).status == "Canceled by the user"


def test_the_owner_of_a_job_run_from_the_web_is_the_signed_in_user(ui: Ui, browser: Any) -> None:
    with signed_in_page(browser, ui.url, "olga", timeout_ms=60_000) as page:
        page.goto("/run/ok")
        page.check("input[name=device][value=t1]")
        page.fill("#info", "olga's web run")
        page.click("#run-submit")
        page.wait_for_url("**/jobs/*")
        job_id = page.url.split("/jobs/")[1].split("?")[0]
        assert page.locator("#job-owner").inner_text() == "olga"
    assert read_job(job_id, with_logs=False).owner == "olga"


def _activity_rows(page: Any) -> list[tuple[str, str, str]]:
    """(who, action, from) of each row of the Activity tab, as shown."""
    rows = page.locator("#activity tbody tr[data-action]")
    out = []
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        who, action, source = (cells.nth(i).inner_text() for i in (1, 2, 3))
        out.append((who, action, source))
    return out


def _listed(page: Any) -> set[str]:
    rows = page.locator("#jobs tbody tr[data-job]")
    return {rows.nth(i).get_attribute("data-job") for i in range(rows.count())}


def test_the_activity_tab_and_the_canceled_by_me_filter(ui: Ui, browser: Any) -> None:
    """olga cancels her job and writes a note in the detail view: the Activity tab shows
    both as hers, from the web; after a sync, the list's "canceled-by-me" filter picked in
    the page shows that job to olga (not the job the admin canceled), and the admin's own
    cancel to the admin — ``@me`` is the signed-in user, not the server's OS user."""
    mine = submit_job("ok", target=["t1"], owner="olga", info="olga's to cancel", start=False)
    theirs = submit_job("ok", target=["t1"], owner="olga", info="admin cancels", start=False)
    context = signed_in_context(browser, ui.url, "admin")
    page = _page(context)
    try:
        page.goto(f"/jobs/{theirs}")
        page.click("#cancel-job")
        page.wait_for_load_state()
        assert "Canceled 1 job" in page.locator("#flash").inner_text()
    finally:
        context.close()
    context = signed_in_context(browser, ui.url, "olga")
    page = _page(context)
    try:
        page.goto(f"/jobs/{mine}")
        page.click("#cancel-job")
        page.wait_for_load_state()
        assert "Canceled 1 job" in page.locator("#flash").inner_text()
        page.click("#tab-activity")
        page.wait_for_load_state()
        assert _activity_rows(page) == [("olga", "cancel", "web")]
        page.fill("#note-text", "canceled: the <maintenance> window moved")
        page.click("#add-note")
        page.wait_for_load_state()
        assert page.locator("#notes .author").all_inner_texts() == ["olga"]
        assert page.locator("#notes .note-text").inner_text() == (
            "canceled: the <maintenance> window moved"  # shown as text, not markup
        )
        assert _activity_rows(page) == [("olga", "cancel", "web"), ("olga", "note", "web")]
        page.screenshot(path=str(ARTIFACTS / "activity-tab.png"), full_page=True)
        page.goto("/")
        page.click("#refresh")  # this ui syncs only on Refresh
        page.wait_for_load_state()
        page.select_option("#my-filters", "canceled-by-me")
        page.click("#apply-filter")
        page.wait_for_load_state()
        shown = _listed(page)
        assert mine in shown and theirs not in shown and ui.oscars_job not in shown
        assert "olga" in page.locator("#summary").inner_text()
    finally:
        context.close()
    context = signed_in_context(browser, ui.url, "admin")
    page = _page(context)
    try:
        page.goto("/?filter=canceled-by-me")
        shown = _listed(page)
        assert theirs in shown and mine not in shown
    finally:
        context.close()


def test_a_viewer_subscribes_only_their_own_address(ui: Ui, browser: Any) -> None:
    from workspaces_jobs.identity import set_email
    from workspaces_jobs.lifecycle import cancel_job
    from workspaces_jobs.notify import read_subscriptions

    job = submit_job("ok", target=["t1"], owner="oscar", info="vic subscribes", start=False)
    set_email("vic", "vic@example.com")
    context = signed_in_context(browser, ui.url, "vic")
    page = _page(context)
    try:
        page.goto(f"/jobs/{job}")
        field = page.locator("form:has(#notify-job) input[name=email]")
        assert field.input_value() == "vic@example.com"  # their own, filled in
        page.click("#notify-job")
        page.wait_for_load_state()
        assert "vic@example.com will be emailed" in page.locator("#flash").inner_text()
        refused = _forge(page, "/jobs/notify", {"job": job, "email": "boss@example.com"})
        assert refused.status == 403
        assert "vic (viewer) may not subscribe boss@example.com" in refused.text()
        assert "only their own address (vic@example.com)" in refused.text()
    finally:
        context.close()
        set_email("vic", "")
    assert [s.email for s in read_subscriptions(job).subscribers] == ["vic@example.com"]
    cancel_job(job, who="cleanup")


def test_saved_filters_have_owners(ui: Ui, browser: Any) -> None:
    """olga saves a filter; oscar (another operator) sees no Delete button for it and a
    forged delete is 403; olga deletes it."""
    import uuid

    name = f"olga-{uuid.uuid4().hex[:6]}"
    context = signed_in_context(browser, ui.url, "olga")
    page = _page(context)
    try:
        page.goto(f"/?q={name}")
        page.fill("#filter-name", name)
        page.click("#save-filter")
        page.wait_for_load_state()
        assert f"Saved filter '{name}'" in page.locator("#flash").inner_text()
    finally:
        context.close()
    context = signed_in_context(browser, ui.url, "oscar")
    page = _page(context)
    try:
        page.goto(f"/?filter={name}")
        assert page.locator("#my-filters").input_value() == name
        assert page.locator("#delete-filter").count() == 0  # olga's, not his
        refused = _forge(page, "/filters/delete", {"name": name})
        assert refused.status == 403 and "oscar (operator) may not filters" in refused.text()
        replaced = _forge(page, "/filters/save", {"name": name, "q": "other"})
        assert replaced.status == 403
    finally:
        context.close()
    context = signed_in_context(browser, ui.url, "olga")
    page = _page(context)
    try:
        page.goto(f"/?filter={name}")
        page.click("#delete-filter")
        page.wait_for_load_state()
        assert f"Deleted filter '{name}'" in page.locator("#flash").inner_text()
    finally:
        context.close()
