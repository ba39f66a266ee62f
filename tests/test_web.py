"""The web jobs view end to end, in a real headless Chromium (Debian's ``chromium``).

One ``wsjobs ui`` process (a subprocess on a free port, syncing every 2 s) serves a
history synced from the session's Prefect server: three finished jobs (one with hostile
``<script>`` text in its info), one Pending job that the browser subscribes to and
cancels (a real SMTP server receives the email), and one synthetic job from yesterday
that exists only in the history. Playwright drives the browser through
``executable_path`` (never ``playwright install``); screenshots go to
``test-artifacts/web/``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobhelpers import read_logs_settled
from smtpserver import PASSWORD, USER, SmtpServer, free_port
from webauth import serve_ui, signed_in, signed_in_page, synced

from workspaces_jobs.jobs import job_link, read_job, submit_job, wait_job
from workspaces_jobs.reporting import windows
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.sync import sync_history
from workspaces_jobs.reporting.synthetic import add_jobs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server"),  # real jobs on the session server
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
HOSTILE = "<script>window.pwned=1</script>"

# key → (action, target, info suffix, expected status)
RUNS = {
    "ok": ("ok", ["t1"], "all fine", "Completed"),
    "mixed": ("mixed", ["all"], "check fails on t3", "Completed with errors"),
    "broken": ("broken", ["t2"], f"boom {HOSTILE}", "Error"),
}


@dataclass
class World:
    token: str
    url: str
    history: Path
    proc: subprocess.Popen[bytes]
    jobs: dict[str, str]
    pending: str
    yesterday: str
    created_yesterday: datetime
    pinned: datetime  # the ui server's clock (WSJOBS_NOW): the newest listed job's creation
    created: dict[str, datetime]  # job id → creation instant (the real server's clock)
    smtp: SmtpServer
    expected_export: list[dict[str, Any]]

    @property
    def search(self) -> str:
        return f"web {self.token}"


def _wsjobs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=120,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    token = uuid.uuid4().hex[:10]
    smtp = SmtpServer(free_port()).start()
    jobs = {
        key: submit_job(action, target=target, owner="webtester", info=f"web {token} {text}")
        for key, (action, target, text, _) in RUNS.items()
    }
    pending = submit_job(
        "ok", target=["t1"], owner="webtester", info=f"pend {token} waiting", start=False
    )
    for job_id in jobs.values():
        wait_job(job_id, timeout=90)
        read_logs_settled(job_id)  # steps and logs settled: the first sync sees them final
    history = tmp_path_factory.mktemp("web") / "history.duckdb"
    sync_history(history)
    # The real server stamped the jobs with the real clock; the ui server's clock is pinned
    # to the newest of them, so "today" is decided for a known instant at any hour.
    created = {}
    for job_id in [*jobs.values(), pending]:
        stamp = read_job(job_id).created
        assert stamp is not None
        created[job_id] = stamp
    pinned = max(created[j] for j in jobs.values())
    zone = windows.resolve_zone(None)
    start_of_today = windows.age_window("today", tz=zone, now=pinned).start
    assert start_of_today is not None
    created_yesterday = start_of_today - timedelta(minutes=5)
    with open_store(history) as con:
        (yesterday,) = add_jobs(
            con,
            [
                {
                    "info": f"web {token} from yesterday",
                    "status": "Completed",
                    "owner": "webtester",
                    "created": created_yesterday,
                    "devices": ["t2"],
                    "logs": [{"message": "old line", "device": "t2", "step": "main"}],
                }
            ],
        )
    listed = _wsjobs(
        "list", "--json", "--no-sync", "--history", str(history), "--age", "all",
        "--search", f"web {token}", "--limit", "0",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    expected = json.loads(listed.stdout)
    assert len(expected) == 4

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "ui-server.log"
    env = dict(
        os.environ,
        WSJOBS_SMTP_HOST="127.0.0.1",
        WSJOBS_SMTP_PORT=str(smtp.port),
        WSJOBS_SMTP_USER=USER,
        WSJOBS_SMTP_PASSWORD=PASSWORD,
        WSJOBS_SMTP_FROM="jobs@example.com",
        WSJOBS_SMTP_TIMEOUT="5",
        WSJOBS_NOW=pinned.isoformat(),
    )
    try:
        with serve_ui(
            ["--history", str(history), "--sync-every", "2"], log=log, env=env, ready=synced
        ) as (url, proc):
            yield World(
                token,
                url,
                history,
                proc,
                jobs,
                pending,
                yesterday,
                created_yesterday,
                pinned,
                created,
                smtp,
                expected,
            )
    finally:
        smtp.stop()


@pytest.fixture
def page(browser: Any, world: World) -> Iterator[Any]:
    with signed_in_page(
        browser, world.url, accept_downloads=True, viewport={"width": 1500, "height": 950}
    ) as page:
        yield page


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _row_ids(page: Any) -> list[str]:
    ids: list[str] = page.locator("#jobs tbody tr[data-job]").evaluate_all(
        "rows => rows.map(r => r.dataset.job)"
    )
    return ids


def _search(page: Any, text: str) -> None:
    page.fill("#search", text)
    page.click("#search-button")
    page.wait_for_load_state()


# --- tests, in the order a user would go -------------------------------------------------


def test_list_defaults_to_today_and_switches_age(world: World, page: Any) -> None:
    page.goto("/")
    assert page.locator(".ages a.current").inner_text() == "Today"
    _search(page, world.search)
    zone = windows.resolve_zone(None)
    today = windows.age_window("today", tz=zone, now=world.pinned)
    # All three, unless they straddled local midnight (then the newest ones); never
    # yesterday's job.
    expected = {j for j in world.jobs.values() if today.contains(world.created[j])}
    assert expected and world.yesterday not in expected
    assert set(_row_ids(page)) == expected
    # The badges and colours below need all three rows: when midnight split them, look
    # at them in the "all" view.
    if expected != set(world.jobs.values()):
        page.click('.ages a[data-age="all"]')
        page.wait_for_load_state()
    for key, (*_, status) in RUNS.items():
        badge = page.locator(f'tr[data-job="{world.jobs[key]}"] td[data-col=status] .status')
        assert badge.inner_text() == status
    colours = {
        key: page.locator(f'tr[data-job="{world.jobs[key]}"] .status').evaluate(
            "el => getComputedStyle(el).backgroundColor"
        )
        for key in RUNS
    }
    assert len(set(colours.values())) == 3  # each status its own colour
    page.click("#refresh")
    page.wait_for_load_state()
    assert page.locator("#flash").inner_text().startswith("Synced:")
    assert page.input_value("#search") == world.search  # Refresh keeps the view
    _shot(page, "list-today")

    for age, label in [("week", "This week"), ("month", "This month"), ("quarter", "This quarter"),
                       ("year", "This year"), ("all", "All")]:  # fmt: skip
        page.click(f'.ages a[data-age="{age}"]')
        page.wait_for_load_state()
        assert page.locator(".ages a.current").inner_text() == label
        assert page.input_value("#search") == world.search  # the search is kept
        window = windows.age_window(age, tz=zone, now=world.pinned)
        expected = {j for j in world.jobs.values() if window.contains(world.created[j])}
        if window.contains(world.created_yesterday):
            expected.add(world.yesterday)
        assert set(_row_ids(page)) == expected, age
    assert world.yesterday in _row_ids(page)


def test_hostile_text_is_shown_not_run(world: World, page: Any) -> None:
    page.goto(f"/?q={world.token}+boom")
    cell = page.locator(f'tr[data-job="{world.jobs["broken"]}"] td[data-col=info]')
    assert HOSTILE in cell.inner_text()
    assert page.evaluate("window.pwned") is None
    assert page.locator("script").count() == 1  # /static/app.js only
    page.goto(f"/jobs/{world.jobs['broken']}")
    assert HOSTILE in page.locator("#job-info").inner_text()
    assert page.evaluate("window.pwned") is None


def test_status_chip_saved_filter_reset_and_my_filters(world: World, page: Any) -> None:
    page.goto("/?age=all")
    _search(page, world.search)
    page.click('.statuses a.chip[data-status="Error"]')
    page.wait_for_load_state()
    assert _row_ids(page) == [world.jobs["broken"]]

    name = f"web-errors-{world.token}"
    page.fill("#filter-name", name)
    page.click("#save-filter")
    page.wait_for_load_state()
    assert "Saved filter" in page.locator("#flash").inner_text()
    assert _row_ids(page) == [world.jobs["broken"]]

    page.click("#reset-view")
    page.wait_for_load_state()
    assert page.locator(".ages a.current").inner_text() == "Today"
    assert page.input_value("#search") == ""

    page.select_option("#my-filters", name)
    page.click("#apply-filter")
    page.wait_for_load_state()
    assert _row_ids(page) == [world.jobs["broken"]]
    assert "status is Error" in page.locator("#summary").inner_text()
    _shot(page, "list-saved-filter")

    page.select_option("#my-filters", "pending")  # a predefined filter
    page.click("#apply-filter")
    page.wait_for_load_state()
    assert world.pending in _row_ids(page)
    statuses = page.locator("#jobs tbody td[data-col=status] .status").all_inner_texts()
    assert statuses and set(statuses) == {"Pending"}


def _same(csv_value: str, listed: Any) -> bool:
    if listed is None:
        return csv_value == ""
    if isinstance(listed, bool | int | float):
        return csv_value != "" and float(csv_value) == float(listed)
    if isinstance(listed, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT.*", listed):
        return datetime.fromisoformat(csv_value.replace(" ", "T")) == datetime.fromisoformat(listed)
    return csv_value == str(listed)


def test_export_csv_is_exactly_the_filtered_rows(world: World, page: Any) -> None:
    page.goto("/?age=all")
    _search(page, world.search)
    shown = _row_ids(page)
    page.select_option("#export-format", "csv")
    with page.expect_download() as info:
        page.click("#export")
    download = info.value
    target = ARTIFACTS / "export.csv"
    download.save_as(str(target))
    assert download.suggested_filename.endswith(".csv")
    with open(target, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [r["id"] for r in world.expected_export] == shown
    for got, want in zip(rows, world.expected_export, strict=True):
        assert set(got) == set(want)
        for column, value in want.items():
            assert _same(got[column], value), (column, got[column], value)


def test_post_without_the_token_is_refused(world: World) -> None:
    with httpx.Client(base_url=world.url) as anonymous:  # no session: sign in first
        assert anonymous.post("/jobs/cancel", data={"job": world.pending}).status_code == 401
    with signed_in(httpx.Client(base_url=world.url)) as client:
        assert client.post("/jobs/cancel", data={"job": world.pending}).status_code == 403
        html = client.get("/").text  # now with the cookie
        token = re.search(r'name="csrf" value="([^"]+)"', html)
        assert token is not None
        assert client.post("/jobs/cancel", data={"job": world.pending}).status_code == 403
        evil = client.post(
            "/jobs/cancel",
            data={"job": world.pending, "csrf": token.group(1)},
            headers={"origin": "http://evil.example"},
        )
        assert evil.status_code == 403
    assert read_job(world.pending, with_logs=False).status == "Pending"


def test_notify_then_cancel_a_pending_job(world: World, page: Any) -> None:
    from workspaces_jobs.notify.subscriptions import read_subscriptions

    email = f"ops-{world.token}@example.com"
    page.goto(f"/?filter=pending&q=pend+{world.token}")
    assert _row_ids(page) == [world.pending]
    page.check(f'tr[data-job="{world.pending}"] input[name=job]')
    page.fill("#notify-email", email)
    page.click("#notify")
    page.wait_for_load_state()
    assert "will be emailed" in page.locator("#flash").inner_text()
    assert read_subscriptions(world.pending).find(email) is not None

    page.check(f'tr[data-job="{world.pending}"] input[name=job]')
    page.click("#cancel")
    page.wait_for_load_state()
    assert "Canceled 1 job" in page.locator("#flash").inner_text()
    assert _row_ids(page) == []  # no longer Pending
    page.goto(f"/?age=all&q=pend+{world.token}")
    badge = page.locator(f'tr[data-job="{world.pending}"] .status')
    assert badge.inner_text() == "Canceled by the user"
    _shot(page, "list-canceled")

    (message,) = world.smtp.inbox.wait_for(email)
    assert message["X-Wsjobs-Job-Id"] == world.pending
    assert "Canceled by the user" in message["Subject"]
    page.goto(f"/jobs/{world.pending}")
    assert page.locator("#canceled-by").inner_text() == "admin"  # the signed-in user
    assert page.locator("#cancel-job").count() == 0  # nothing left to cancel


def test_detail_progress_logs_and_workspaces(world: World, page: Any) -> None:
    job_id = world.jobs["mixed"]
    page.goto(f"/?age=all&q={world.token}+check")
    page.click(f'tr[data-job="{job_id}"] a.job-link')
    page.wait_for_url(f"**/jobs/{job_id}")
    bar = page.locator(".job-head progress")
    assert float(bar.get_attribute("value") or 0) == 100.0
    assert page.locator(".job-head .bar .pct").inner_text() == "100%"
    assert page.locator(".job-head .status").inner_text() == "Completed with errors"
    assert page.locator("#job-owner").inner_text() == "webtester"
    assert page.locator("#prefect-link").get_attribute("href") == job_link(job_id)
    assert page.locator("#tab-logs").get_attribute("aria-selected") == "true"

    groups = page.locator("#panel-logs details.log-group")
    devices = groups.evaluate_all("gs => gs.map(g => g.dataset.device)")
    assert devices == ["", "t1", "t2", "t3"]  # the job's own lines, then each device
    check = page.locator('details[data-device="t3"] .log-step[data-step="check"]')
    failed_line = check.locator("tr", has_text="check failed")
    assert failed_line.locator("td.stream").inner_text() == "err"
    assert failed_line.locator("td.lvl").inner_text() == "WARNING"
    steps = page.locator('details[data-device="t1"] .log-step').evaluate_all(
        "s => s.map(x => x.dataset.step)"
    )
    assert steps == ["prepare", "check", "finish"]
    _shot(page, "detail-logs")

    page.click("#tab-workspaces")
    page.wait_for_load_state()
    assert page.locator("#tab-workspaces").get_attribute("aria-selected") == "true"
    job = read_job(job_id, with_logs=False)
    for device in job.devices:
        row = page.locator(f'#devices tr[data-device="{device.device}"]')
        assert row.locator(".status").inner_text() == device.status
    assert page.locator("#devices tbody tr[data-device]").count() == 3
    assert "exit 3" in page.locator('#devices tr[data-device="t3"] td.steps').inner_text()
    _shot(page, "detail-workspaces")


def test_detail_of_a_job_only_the_history_has(world: World, page: Any) -> None:
    page.goto(f"/jobs/{world.yesterday}")
    assert "copy in the history file" in page.locator("#source-note").inner_text()
    assert page.locator('details[data-device="t2"]').count() == 1


def test_cli_reads_the_history_while_the_ui_serves_it(world: World) -> None:
    """The shared history (issue 17): a reader never waits for the ui's syncs."""
    env = dict(os.environ, WSJOBS_LOCK_TIMEOUT="1")
    listed = _wsjobs(
        "list", "--json", "--no-sync", "--history", str(world.history), "--age", "all",
        "--search", f"web {world.token}", "--limit", "0", env=env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert world.proc.poll() is None, "the ui must still be serving"
    ids = {row["id"] for row in json.loads(listed.stdout)}
    assert {str(world.yesterday), *map(str, world.jobs.values())} <= ids
