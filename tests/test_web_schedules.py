"""The Schedules page and the Run form in a real headless Chromium, on the real server.

One ``wsjobs ui`` process (a subprocess on a free port) and the session's Prefect server:
the Run form of an action is built from its declared parameters, runs a job now, refuses
bad input with the one-line error (nothing created), creates a cron schedule that the
Schedules page lists with its next runs, then pauses, resumes and deletes it. A POST
without the form token is refused. Screenshots go to ``test-artifacts/web/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from webauth import serve_ui, signed_in, signed_in_page

from workspaces_jobs.jobs import read_job
from workspaces_jobs.schedules import list_schedules

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    history = tmp_path_factory.mktemp("web-sched") / "history.duckdb"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serve_ui(
        ["--history", str(history), "--sync-every", "2"],
        log=ARTIFACTS / "ui-schedules.log",
        env=os.environ,
    ) as (url, _):
        yield url


@pytest.fixture
def page(browser: Any, ui: str) -> Iterator[Any]:
    with signed_in_page(browser, ui, viewport={"width": 1400, "height": 900}) as page:
        yield page


def _names() -> set[str]:
    return {s.name for s in list_schedules()}


def test_run_form_is_built_from_the_declared_parameters_and_runs_now(page: Any) -> None:
    page.goto("/run")
    page.click("a.run-link:text-is('greet')")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Run greet"
    assert page.locator("#param_who").get_attribute("required") is not None
    assert page.locator("#param_greeting").input_value() == "Hello"  # the default
    assert "Whom to greet." in page.content() and "The word to use." in page.content()
    page.fill("#param_who", "<b>web</b>")
    page.check("input[name=device][value=t1]")
    page.fill("#info", "from the form")
    page.click("#run-submit")
    page.wait_for_url("**/jobs/*")
    job_id = page.url.split("/jobs/")[1].split("?")[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run-form-job.png"), full_page=True)
    job = read_job(job_id, with_logs=False)
    assert job.action == "greet" and job.info == "from the form"
    assert job.parameters["params"] == {"who": "<b>web</b>", "greeting": "Hello"}


def test_bad_input_shows_the_error_and_creates_nothing(page: Any) -> None:
    before = _names()
    page.goto("/run/greet")
    page.fill("#param_who", "x")
    page.check("#all-devices")
    page.check("#when-cron")
    page.fill("#cron", "99 * * * *")
    page.fill("#schedule-name", "web-bad")
    page.click("#run-submit")
    problem = page.locator("#problem").inner_text()
    assert problem.startswith("error: bad cron '99 * * * *'")
    assert page.locator("#cron").input_value() == "99 * * * *"  # what was typed stays
    assert _names() == before


def test_schedules_page_create_pause_resume_delete(page: Any) -> None:
    page.goto("/run/greet")
    page.fill("#param_who", "beta")
    page.check("input[name=tag][value=beta]")
    page.check("#when-cron")
    page.fill("#cron", "0 2 * * *")
    page.fill("#tz", "Europe/Berlin")
    page.fill("#schedule-name", "web-nightly")
    page.click("#run-submit")
    page.wait_for_url("**/schedules*")
    row = page.locator("tr[data-schedule='web-nightly']")
    assert "cron 0 2 * * *" in row.inner_text() and "Europe/Berlin" in row.inner_text()
    times = row.locator(".next-runs div").all_inner_texts()
    assert len(times) == 3 and all(t.endswith("02:00:00") for t in times)
    page.screenshot(path=str(ARTIFACTS / "schedules.png"), full_page=True)

    row.locator("button.op-pause").click()
    page.wait_for_load_state()
    assert page.locator("tr[data-schedule='web-nightly'] .state").inner_text() == "paused"
    page.locator("tr[data-schedule='web-nightly'] button.op-resume").click()
    page.wait_for_load_state()
    assert page.locator("tr[data-schedule='web-nightly'] .state").inner_text() == "active"
    page.locator("tr[data-schedule='web-nightly'] button.op-delete").click()
    page.wait_for_load_state()
    assert page.locator("tr[data-schedule='web-nightly']").count() == 0
    assert "web-nightly" not in _names()


def test_posts_without_the_form_token_are_refused(ui: str) -> None:
    before = _names()
    for path, data in (
        ("/run/greet", {"param_who": "x", "all": "1", "when": "cron", "cron": "0 2 * * *"}),
        ("/schedules/change", {"name": "anything", "op": "delete"}),
    ):
        with signed_in(httpx.Client(base_url=ui)) as client:  # signed in: the token decides
            res = client.post(path, data=data, headers={"Origin": ui})
        assert res.status_code == 403, (path, res.status_code)
        unsigned = httpx.post(f"{ui}{path}", data=data, headers={"Origin": ui})
        assert unsigned.status_code == 401, (path, unsigned.status_code)
    assert _names() == before
