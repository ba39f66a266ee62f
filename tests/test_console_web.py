"""The operator's console in a real headless Chromium: filters, live logs, kill, rerun, widths.

One ``wsjobs ui`` process (a subprocess on a free port) serves a history synced from the
session's Prefect server with three finished jobs of this module (tagged by a token in
their info, so other modules' jobs never match). What ``wsjobs list --json`` returns for
each filter is read before the UI starts (the UI then holds the history file).
Screenshots at 1280×900 and 390×844 go to ``test-artifacts/console/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from jobhelpers import read_logs_settled
from webauth import serve_ui, signed_in_page, synced

from workspaces_jobs.jobs import job_state, read_job, start_executor, submit_job, wait_job
from workspaces_jobs.reporting.sync import sync_history
from workspaces_jobs.status import JobStatus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server"),  # real jobs on the session server
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


def _wsjobs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=180,
    )


# Each case: URL parameters the page's controls produce ↔ the same filter as CLI flags.
# Every case also searches the module's token, so only this module's jobs match.
def _cases() -> dict[str, tuple[dict[str, list[str]], list[str]]]:
    today = datetime.now(UTC).date()
    since, until = str(today - timedelta(days=2)), str(today + timedelta(days=2))
    return {
        "since-until": (
            {"since": [since], "until": [until]},
            ["--since", since, "--until", until],
        ),
        "owner": ({"owner": ["bob"]}, ["--owner", "bob"]),
        "action": ({"action": ["colours"]}, ["--action", "colours"]),
        "device": ({"device": ["t3"]}, ["--device", "t3"]),
        "search-logs": ({"search_logs": ["check failed"]}, ["--search-logs", "check failed"]),
        "started-over": ({"started_over": ["1s"]}, ["--started-over", "1s"]),
        "sort-dir": ({"sort": ["owner"], "dir": ["asc"]}, ["--sort", "owner", "--asc"]),
        "limit": ({"limit": ["2"]}, ["--limit", "2"]),
        "columns": ({"columns": ["id", "owner"]}, ["--columns", "id,owner"]),
        "tz": ({"tz": ["Asia/Tokyo"]}, ["--tz", "Asia/Tokyo"]),
        "status": ({"status": ["completed"]}, ["--status", "completed"]),
    }


@dataclass
class World:
    token: str
    url: str
    history: Path
    jobs: dict[str, str]
    expected: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    token = uuid.uuid4().hex[:10]
    jobs = {
        "ok": submit_job("ok", target=["t1"], owner="alice", info=f"con {token} fine"),
        "mixed": submit_job("mixed", target=["all"], owner="bob", info=f"con {token} mixed"),
        "colours": submit_job(
            "colours", target=["t1", "t2"], owner="carol", info=f"con {token} Update openssl"
        ),
    }
    for job_id in jobs.values():
        wait_job(job_id, timeout=120)
        read_logs_settled(job_id)
    history = tmp_path_factory.mktemp("console") / "history.duckdb"
    sync_history(history)
    time.sleep(1.1)  # "started more than 1s ago" holds for every job from here on
    base = ["list", "--json", "--no-sync", "--history", str(history), "--age", "all"]
    base += ["--search", token, "--limit", "0"]
    cases = _cases()

    def cli(flags: list[str]) -> list[dict[str, Any]]:
        # --limit given by a case replaces the base's --limit 0 (the last one wins).
        out = _wsjobs(*base, *flags)
        assert out.returncode == 0, out.stderr
        rows: list[dict[str, Any]] = json.loads(out.stdout)
        return rows

    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(cases, pool.map(cli, [f for _, f in cases.values()]), strict=True))
    results["all"] = cli([])
    assert len(results["all"]) == 3

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serve_ui(
        ["--history", str(history), "--sync-every", "2"],
        log=ARTIFACTS / "ui-server.log",
        env=os.environ,
        ready=synced,
    ) as (url, _):
        yield World(token, url, history, jobs, results)


@contextlib.contextmanager
def _page(browser: Any, world: World, size: str = "desktop") -> Iterator[Any]:
    width, height = WIDTHS[size]
    with signed_in_page(
        browser,
        world.url,
        timeout_ms=60_000,
        viewport={"width": width, "height": height},
        accept_downloads=True,
    ) as page:
        yield page


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _row_ids(page: Any) -> list[str]:
    ids: list[str] = page.locator("#jobs tbody tr[data-job]").evaluate_all(
        "rows => rows.map(r => r.dataset.job)"
    )
    return ids


def _no_overflow(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    inner = page.evaluate("window.innerWidth")
    assert width <= inner, f"page is {width}px wide in a {inner}px window"


def _set_control(page: Any, param: str, values: list[str]) -> None:
    """Operate the page's own control for one URL parameter, as a user would."""
    if param == "status":
        for slug in values:
            page.click(f'.chip[href*="status={slug}"]')
            page.wait_for_load_state()
        return
    if not page.locator("#filter-panel[open]").count():
        page.click("#filter-panel > summary")
    control = page.locator(f"#f-{param}")
    tag = control.evaluate("el => el.tagName")
    if tag == "SELECT":
        control.select_option(values[0])
    elif tag == "FIELDSET":
        for box in page.locator(f'#f-{param} input[type="checkbox"]').all():
            want = box.get_attribute("value") in values
            if box.is_checked() != want:
                box.click()
    else:
        control.fill(",".join(values))


def test_every_filter_control_round_trips_through_the_url_and_matches_the_cli(
    world: World, browser: Any
) -> None:
    with _page(browser, world) as page:
        for name, (params, _) in _cases().items():
            page.goto(f"/?age=all&q={world.token}")
            _set_control(page, next(iter(params)), next(iter(params.values())))
            for param, values in list(params.items())[1:]:
                _set_control(page, param, values)
            if name != "status":
                page.click("#apply-fields")
                page.wait_for_load_state()
            query = parse_qs(urlsplit(page.url).query)
            for param, values in params.items():
                assert query.get(param) == values, (name, page.url)
            expected = [row["id"] for row in world.expected[name]]
            assert _row_ids(page) == expected, name
            if name == "columns":
                headers = page.locator("#jobs thead th[data-col]").evaluate_all(
                    "ths => ths.map(t => t.dataset.col)"
                )
                assert headers == list(world.expected[name][0])  # the CLI's JSON keys
            # The URL alone reproduces the view (a shared link): same rows, same controls.
            page.goto(page.url)
            assert _row_ids(page) == expected, name
            param, values = next(iter(params.items()))
            if param not in ("status", "columns"):
                assert page.input_value(f"#f-{param}") == ",".join(values)


@pytest.mark.parametrize("size", list(WIDTHS))
def test_list_and_detail_fit_the_width_without_breaking_words(
    world: World, browser: Any, size: str
) -> None:
    with _page(browser, world, size) as page:
        page.goto(f"/?age=all&q={world.token}")
        _no_overflow(page)
        # Words never break inside: the info cell wraps between words only.
        style = page.locator('td[data-col="info"]').first.evaluate(
            "el => [getComputedStyle(el).overflowWrap, getComputedStyle(el).wordBreak]"
        )
        assert style[1] == "normal" and style[0] in ("normal", "break-word"), style
        info = page.locator('td[data-col="info"]', has_text="Update openssl")
        if info.is_visible():
            box = info.evaluate(
                "el => { const r = document.createRange(); r.selectNodeContents(el);"
                " return Array.from(r.getClientRects()).length }"
            )
            assert box >= 1
        _shot(page, f"list-{size}")
        page.goto(f"/jobs/{world.jobs['colours']}")
        _no_overflow(page)
        _shot(page, f"detail-{size}")


def test_ansi_colours_render_as_colours_and_never_as_codes(world: World, browser: Any) -> None:
    with _page(browser, world) as page:
        page.goto(f"/jobs/{world.jobs['colours']}")
        green = page.locator(".log td.msg span.a-fg-green").first
        assert green.inner_text() == "green"
        assert green.evaluate("el => getComputedStyle(el).color") == "rgb(26, 127, 55)"
        bold = page.locator(".log td.msg span.a-fg-red.a-bold").first
        assert bold.evaluate("el => getComputedStyle(el).fontWeight") == "700"
        text = page.locator("#panel-logs").inner_text()
        assert "\x1b" not in text and "[32m" not in text and "<b>tag</b>" in text
        page.click("#jump-error")
        assert page.url.endswith("#first-error")
        assert "check failed" in page.locator("#first-error").inner_text()
        with page.expect_download() as download:
            page.click("#log-download")
        body = Path(download.value.path()).read_text()
        assert "line 1 green bold red <b>tag</b>" in body and "\x1b" not in body
        _shot(page, "colours")


def test_live_lines_arrive_in_order_without_a_reload(world: World, browser: Any) -> None:
    # Pending while the page loads (started only after), so the page is live at any speed.
    job_id = submit_job(
        "ticking",
        target=["t1"],
        params={"ticks": "40"},
        info=f"con {world.token} live",
        start=False,
    )
    with _page(browser, world) as page:
        page.goto(f"/jobs/{job_id}")
        assert page.locator("#panel-logs[data-events]").count() == 1, "not followed live"
        page.evaluate("window.__sameDocument = 1")
        start_executor(job_id)
        page.wait_for_selector("#panel-logs[data-ended]", state="attached", timeout=120_000)
        assert page.evaluate("window.__sameDocument") == 1  # never reloaded
        ticks = page.locator('.log-group[data-device="t1"] td.msg').evaluate_all(
            "tds => tds.map(t => t.textContent).filter(t => t.startsWith('tick '))"
        )
        assert ticks == [f"tick {i}" for i in range(1, 41)]
        assert page.locator("#job-badge .status").inner_text() == "Completed"
        _shot(page, "live-ended")


def test_kill_a_running_job_from_the_web(world: World, browser: Any) -> None:
    job_id = submit_job(
        "ticking", target=["t1"], params={"ticks": "600"}, info=f"con {world.token} kill me"
    )
    deadline = time.monotonic() + 60
    while job_state(job_id)[0] != JobStatus.IN_PROGRESS:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.3)
    with _page(browser, world) as page:
        page.goto(f"/jobs/{job_id}")
        page.click("#kill-job")
        assert "Kill job" in page.locator("#confirm-question").inner_text()
        assert job_state(job_id)[0] == JobStatus.IN_PROGRESS  # nothing before confirming
        page.click("#confirm-yes")
        page.wait_for_load_state()
        assert page.locator("#flash").inner_text().startswith("Kill")
        assert wait_job(job_id, timeout=60) == JobStatus.CANCELED
        assert "wsjobs" not in page.locator("#flash").inner_text()


def test_rerun_failed_devices_from_the_web(world: World, browser: Any) -> None:
    mixed = world.jobs["mixed"]
    devices = read_job(mixed, with_logs=False).devices
    failed = sorted(d.device for d in devices if d.status != "Completed")
    with _page(browser, world) as page:
        page.goto(f"/jobs/{mixed}")
        page.click("#rerun-failed")
        assert "only its failed devices" in page.locator("#confirm-question").inner_text()
        page.click("#confirm-yes")
        page.wait_for_load_state()
        new_id = urlsplit(page.url).path.rsplit("/", 1)[-1]
        assert new_id != mixed
        assert page.locator("#flash").inner_text().startswith("Rerun started")
        new = read_job(new_id, with_logs=False)
        assert new.rerun_of == mixed and sorted(new.parameters["target"]) == failed
        wait_job(new_id, timeout=120)
        # A job that ended: rerun offered, the summary can be emailed now, no kill.
        page.goto(f"/jobs/{new_id}")
        assert page.locator("#rerun-all").count() == 1 and page.locator("#kill-job").count() == 0
        assert page.locator("#notify-job").inner_text() == "Email the summary now"
