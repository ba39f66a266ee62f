"""The web jobs view's pieces: URL state, paging, CSRF, hosts, escaping, the history fallback.

Pure rules are table-tested; the app itself runs in-process (Starlette's TestClient) over
a real DuckDB history filled with synthetic jobs (no background sync), so every page and
refusal is checked against real queries. The browser end-to-end test is test_web.py.
"""

from __future__ import annotations

import csv
import io
import re
import socket
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from webauth import signed_in

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

from workspaces_jobs.jobfacts import JobFact, LogFact, StepFact
from workspaces_jobs.reporting.saved import read_view, set_view
from workspaces_jobs.reporting.synthetic import add_jobs
from workspaces_jobs.web.app import create_app
from workspaces_jobs.web.detail import group_logs
from workspaces_jobs.web.listing import ListRequest, Page
from workspaces_jobs.web.render import environment
from workspaces_jobs.web.security import CSRF_COOKIE, allowed_hosts, csrf_ok
from workspaces_jobs.web.state import WebState

HOSTILE = "<script>alert('pwned')</script> & \"quotes\""
BASE = "http://127.0.0.1:8787"

# --- pure pieces -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"age": ["week"], "q": ["50% off_"]},
        {"filter": ["pending"], "status": ["error", "completed-with-errors"], "page": ["3"]},
        {"owner": ["bob"], "action": ["ok"], "device": ["t1"], "sort": ["owner"], "dir": ["asc"]},
    ],
)
def test_list_request_round_trips_through_its_url(query: dict[str, list[str]]) -> None:
    req = ListRequest.from_params(query)
    assert not req.problems
    url = req.url(page=req.page)
    assert ListRequest.from_params(_parse(url)) == req


def _parse(url: str) -> dict[str, list[str]]:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(url).query, keep_blank_values=True)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"page": ["0"]}, "bad page '0'"),
        ({"page": ["x"]}, "bad page 'x'"),
        ({"page": ["100000"]}, "bad page"),
        ({"dir": ["up"]}, "bad sort direction 'up'"),
        ({"status": ["nope"]}, "nope"),
    ],
)
def test_unusable_list_parameters_become_one_line_problems(
    query: dict[str, list[str]], problem: str
) -> None:
    req = ListRequest.from_params(query)
    assert len(req.problems) == 1 and problem in req.problems[0]


def test_status_chips_toggle_and_a_new_filter_starts_at_page_one() -> None:
    req = ListRequest.from_params({"status": ["error"], "page": ["4"], "q": ["x"]})
    assert _parse(req.toggle_status("error")) == {"q": ["x"]}
    assert _parse(req.toggle_status("pending")) == {"q": ["x"], "status": ["error", "pending"]}
    assert _parse(req.url(page=5))["page"] == ["5"]
    assert _parse(req.sort_url("owner", "created", True)) == {
        "q": ["x"],
        "status": ["error"],
        "sort": ["owner"],
        "dir": ["desc"],
    }
    assert _parse(req.sort_url("owner", "owner", True))["dir"] == ["asc"]


@pytest.mark.parametrize(
    ("number", "size", "total", "pages", "first", "last", "prev", "next_"),
    [
        (1, 50, 0, 1, 0, 0, False, False),
        (1, 50, 50, 1, 1, 50, False, False),
        (1, 50, 51, 2, 1, 50, False, True),
        (2, 50, 51, 2, 51, 51, True, False),
        (3, 25, 120, 5, 51, 75, True, True),
    ],
)
def test_page_arithmetic(
    number: int,
    size: int,
    total: int,
    pages: int,
    first: int,
    last: int,
    prev: bool,
    next_: bool,
) -> None:
    page = Page(number, size, total)
    assert (page.pages, page.first_row, page.last_row) == (pages, first, last)
    assert (page.has_prev, page.has_next) == (prev, next_)


TOKEN = "t0ken"


@pytest.mark.parametrize(
    ("form", "cookies", "headers", "ok"),
    [
        ({"csrf": [TOKEN]}, {CSRF_COOKIE: TOKEN}, {"host": "127.0.0.1:8787"}, True),
        (
            {"csrf": [TOKEN]},
            {CSRF_COOKIE: TOKEN},
            {"host": "127.0.0.1:8787", "origin": "http://127.0.0.1:8787"},
            True,
        ),
        ({}, {CSRF_COOKIE: TOKEN}, {}, False),
        ({"csrf": [TOKEN]}, {}, {}, False),
        ({"csrf": ["wrong"]}, {CSRF_COOKIE: TOKEN}, {}, False),
        ({"csrf": [TOKEN]}, {CSRF_COOKIE: "wrong"}, {}, False),
        (
            {"csrf": [TOKEN]},
            {CSRF_COOKIE: TOKEN},
            {"host": "127.0.0.1:8787", "origin": "http://evil.example"},
            False,
        ),
        ({"csrf": [TOKEN]}, {CSRF_COOKIE: TOKEN}, {"origin": "null"}, False),
    ],
)
def test_csrf_needs_token_in_form_and_cookie_from_this_origin(
    form: dict[str, list[str]], cookies: dict[str, str], headers: dict[str, str], ok: bool
) -> None:
    assert csrf_ok(TOKEN, form, cookies, headers) is ok


def test_allowed_hosts_are_loopback_plus_the_bind_name() -> None:
    assert "*" not in allowed_hosts("127.0.0.1")
    assert "jobs.lan" in allowed_hosts("jobs.lan")
    assert "*" not in allowed_hosts("0.0.0.0")  # a LAN bind is not "any name" (#15)
    assert socket.gethostname().lower() in allowed_hosts("0.0.0.0")
    assert "*" not in allowed_hosts("0.0.0.0", ["jobs.lan"])


def test_logs_are_grouped_job_first_then_device_then_step_order() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def step(device: str, name: str, pos: int) -> StepFact:
        return StepFact(
            f"{device}-{name}", "j", device, name, pos, True, "Completed", None, 0, None, t0, t0
        )

    def line(n: int, device: str | None, name: str | None) -> LogFact:
        return LogFact(str(n), "j", None, device, name, t0 + timedelta(seconds=n), "INFO", None, "")

    job = JobFact(
        "j", "", "a", "", "", "Completed", None, None, None, None, t0, t0, t0, t0, 100.0, None,
        {}, [], None, None, t0,
    )  # fmt: skip
    job.steps = [step("b", "second", 2), step("b", "first", 1), step("a", "only", 1)]
    job.logs = [line(5, "b", "second"), line(4, "b", "first"), line(1, None, None)]
    job.logs += [line(3, "a", "only"), line(6, "b", "first")]
    groups = group_logs(job)
    assert [g.device for g in groups] == [None, "a", "b"]
    assert [s.step for s in groups[2].steps] == ["first", "second"]
    assert [x.id for x in groups[2].steps[0].lines] == ["4", "6"]


def test_a_long_step_log_shows_its_last_lines_and_counts_the_rest() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    job = JobFact(
        "j", "", "a", "", "", "Completed", None, None, None, None, t0, t0, t0, t0, 100.0, None,
        {}, [], None, None, t0,
    )  # fmt: skip
    job.logs = [
        LogFact(str(n), "j", None, "d", "s", t0 + timedelta(seconds=n), "INFO", "out", str(n))
        for n in range(10)
    ]
    (group,) = group_logs(job, cap=3)
    assert [x.message for x in group.steps[0].lines] == ["7", "8", "9"]
    assert group.steps[0].hidden == 7 and group.count == 10


def test_every_template_is_packaged_and_autoescaped() -> None:
    folder = resources.files("workspaces_jobs.web").joinpath("templates")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".j2"))
    assert {"base.html.j2", "list.html.j2", "detail.html.j2", "error.html.j2"} <= set(names)
    env = environment()
    for name in names:
        env.get_template(name)  # parses
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    static = resources.files("workspaces_jobs.web").joinpath("static")
    assert static.joinpath("style.css").is_file() and static.joinpath("app.js").is_file()


def test_the_export_picker_offers_every_export_format() -> None:
    from workspaces_jobs.reporting.export import FORMATS
    from workspaces_jobs.web.routes import EXPORT_FORMATS

    assert set(EXPORT_FORMATS) == set(FORMATS)


# --- the app over a synthetic history ----------------------------------------------------


#: The app's clock in these tests (``WSJOBS_NOW``): a Wednesday 12:30 UTC, so the jobs made
#: seconds before it are "today" in every zone, at any hour the suite runs.
NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)


@pytest.fixture
def history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from workspaces_jobs.reporting.store import open_store

    monkeypatch.setenv("WSJOBS_NOW", NOW.isoformat())
    path = tmp_path / "history.duckdb"
    now = NOW
    jobs: list[dict[str, Any]] = [
        {
            "info": HOSTILE,
            "status": "Error",
            "owner": "<img src=x onerror=alert(1)>",
            "created": now - timedelta(seconds=30),
            "devices": [{"device": "d1", "status": "Error", "steps": [{"step": "boom"}]}],
            "logs": [{"message": "<b>not bold</b>", "device": "d1", "step": "boom"}],
        },
        {"info": "the pending one", "status": "Pending", "created": now - timedelta(seconds=20)},
    ]
    jobs += [
        {"info": f"bulk {i:03d}", "status": "Completed", "created": now - timedelta(seconds=40 + i)}
        for i in range(120)
    ]
    with open_store(path) as con:
        add_jobs(con, jobs)
    return path


@pytest.fixture
def app(history: Path) -> Iterator[tuple[TestClient, WebState]]:
    state = WebState(history, sync_every=0)
    with TestClient(create_app(state), base_url=BASE) as client:
        yield signed_in(client), state


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr data-job="([^"]+)"', html)


def test_list_escapes_hostile_text_and_shows_six_status_chips(
    app: tuple[TestClient, WebState],
) -> None:
    client, _ = app
    page = client.get("/", params={"q": "pwned"})
    assert page.status_code == 200
    assert len(_ids(page.text)) == 1
    assert "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text
    assert "<img src=x" not in page.text
    assert page.text.count("<script") == 1  # only /static/app.js
    chips = re.findall(r'class="chip s-([a-z-]+)', page.text)
    assert chips == [
        "pending", "in-progress", "completed", "completed-with-errors", "error", "canceled",
    ]  # fmt: skip
    for name, value in {
        "content-security-policy": "script-src 'self'",
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
    }.items():
        assert value in page.headers[name]
    cookie = page.headers["set-cookie"]
    assert "samesite=strict" in cookie.lower() and "httponly" in cookie.lower()


def test_paging_uses_the_view_limit_and_counts_every_row(
    app: tuple[TestClient, WebState],
) -> None:
    client, state = app
    with state.db() as con:
        set_view(con, limit=50)
    first = client.get("/")
    assert "rows 1–50 of 122" in first.text and len(_ids(first.text)) == 50
    third = client.get("/", params={"page": "3"})
    assert "Page 3 of 3" in third.text and len(_ids(third.text)) == 22
    seen = _ids(first.text) + _ids(client.get("/", params={"page": "2"}).text) + _ids(third.text)
    assert len(set(seen)) == 122  # no row twice, none missing
    past = client.get("/", params={"page": "9"})
    assert "Page 3 of 3" in past.text  # clamped to the last page


def test_post_without_the_token_is_refused_and_changes_nothing(
    app: tuple[TestClient, WebState],
) -> None:
    client, state = app
    with state.db() as con:
        set_view(con, age="week")
    client.get("/")  # the browser now has the cookie
    for path, data in [
        ("/view/reset", {}),
        ("/filters/save", {"name": "sneaky", "q": "x"}),
        ("/jobs/cancel", {"job": "00000000-0000-0000-0000-000000000000"}),
        ("/jobs/notify", {"job": "00000000-0000-0000-0000-000000000000", "email": "a@b.c"}),
        ("/refresh", {}),
    ]:
        for token in (None, "wrong"):
            form = dict(data, **({"csrf": token} if token else {}))
            response = client.post(path, data=form, follow_redirects=False)
            assert response.status_code == 403, (path, token)
    # the right token from another origin is refused too
    response = client.post(
        "/filters/save",
        data={"csrf": state.csrf_token, "name": "sneaky", "q": "x"},
        headers={"origin": "http://evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    with state.db() as con:
        assert read_view(con).age == "week"
        assert con.cursor().execute("SELECT count(*) FROM saved_filters").fetchone() == (0,)


def test_save_apply_and_reset_with_the_token(app: tuple[TestClient, WebState]) -> None:
    client, state = app
    client.get("/")
    saved = client.post(
        "/filters/save",
        data={"csrf": state.csrf_token, "name": "errs", "status": "error", "q": "pwned"},
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"].startswith("/?filter=errs")
    page = client.get(saved.headers["location"])
    assert "Saved filter &#39;errs&#39;" in page.text and len(_ids(page.text)) == 1
    bad = client.post(
        "/filters/save",
        data={"csrf": state.csrf_token, "name": "Bad Name", "q": "x"},
        follow_redirects=True,
    )
    assert "bad filter name" in bad.text
    with state.db() as con:
        set_view(con, age="year")
    client.post("/view/reset", data={"csrf": state.csrf_token})
    with state.db() as con:
        assert read_view(con).age == "today"


def test_bad_host_header_is_refused(app: tuple[TestClient, WebState]) -> None:
    client, _ = app
    assert client.get("/", headers={"host": "rebound.evil.example"}).status_code == 400


def test_export_csv_is_every_filtered_row(app: tuple[TestClient, WebState]) -> None:
    client, state = app
    with state.db() as con:
        set_view(con, limit=50)
    response = client.get("/export", params={"format": "csv", "q": "bulk 0"})
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 100  # not just the 50 of the first page
    assert {r["info"] for r in rows} == {f"bulk {i:03d}" for i in range(100)}
    assert client.get("/export", params={"format": "docx"}).status_code == 400


@pytest.mark.usefixtures("prefect_server")  # the API is asked first and does not know the job
def test_detail_falls_back_to_the_history_copy(app: tuple[TestClient, WebState]) -> None:
    client, _ = app
    job_id = _ids(client.get("/", params={"q": "pwned"}).text)[0]
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert "no longer has this job" in page.text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page.text and "&lt;script&gt;" in page.text
    assert 'id="job-source">the history file<' in page.text
    devices = client.get(f"/jobs/{job_id}", params={"tab": "workspaces"})
    assert 'data-device="d1"' in devices.text and "s-error" in devices.text
    assert client.get("/jobs/not-a-uuid").status_code == 404
    missing = client.get("/jobs/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


def test_a_settled_job_is_read_from_the_history_without_the_api(
    app: tuple[TestClient, WebState],
) -> None:
    client, state = app
    job_id = _ids(client.get("/", params={"q": "bulk 007"}).text)[0]
    with state.db() as con:
        con.cursor().execute(
            "INSERT INTO sync_jobs (job_id, settled) VALUES ($id, true)", {"id": job_id}
        )
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and 'id="source-note"' not in page.text
    assert 'id="job-source">the history file<' in page.text


def test_bad_filter_values_show_one_line_and_no_rows(app: tuple[TestClient, WebState]) -> None:
    client, _ = app
    page = client.get("/", params={"filter": "no-such-filter"})
    assert page.status_code == 400 and "no filter named" in page.text
    assert client.get("/", params={"sort": "drop table jobs"}).status_code == 400


def test_wsjobs_ui_refuses_a_busy_port_and_an_old_history_file_in_one_line(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    def ui(*args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, WSJOBS_LOCK_TIMEOUT="0.5")
        return subprocess.run(
            [sys.executable, "-m", "workspaces_jobs.cli", "ui", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = ui("--port", str(busy.getsockname()[1]), "--history", str(tmp_path / "h.duckdb"))
    assert taken.returncode == 4
    assert "port is in use" in taken.stderr and "Traceback" not in taken.stderr

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    import duckdb

    old = tmp_path / "h.duckdb"  # a history of the one-DuckDB-file era: migrate it first
    duckdb.connect(str(old)).close()
    refused = ui("--port", str(port), "--history", str(old))
    assert refused.returncode == 4
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "wsjobs history migrate" in last, refused.stderr
