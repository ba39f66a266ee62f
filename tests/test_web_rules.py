"""The web view's rules page (/rules): in-process app, a real history file with a saved
filter, the real Prefect API holding the rules; every change needs the form token."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from webauth import signed_in

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

from workspaces_jobs.notify.rules import read_rules, remove_rule
from workspaces_jobs.reporting.filters import FilterSpec
from workspaces_jobs.reporting.saved import save_filter
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.web.app import create_app
from workspaces_jobs.web.state import WebState

BASE = "http://127.0.0.1:8787"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, WebState, str]]:
    name = f"web-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "history.duckdb"
    with open_store(path) as con:
        save_filter(con, name, FilterSpec.make(age="all", statuses=["error"], owners=["<b>"]))
    state = WebState(path, sync_every=0)
    with TestClient(create_app(state), base_url=BASE) as client:
        yield signed_in(client), state, name
    for rule in read_rules():
        if rule.filter == name:
            remove_rule(rule.name)


def test_rules_page_adds_pauses_resumes_and_removes(app: tuple[TestClient, WebState, str]) -> None:
    client, state, name = app
    page = client.get("/rules")
    assert page.status_code == 200 and f'<option value="{name}">' in page.text
    assert (
        "&lt;b&gt;" in page.text and "<b>" not in page.text.split("<main>")[1].split("New rule")[0]
    )
    refused = client.post("/rules/add", data={"filter": name, "email": "a@example.com"})
    assert refused.status_code == 403 and not [r for r in read_rules() if r.filter == name]
    form = {"csrf": state.csrf_token, "filter": name, "email": "ops@example.com",
            "webhook": "http://127.0.0.1:9/hook"}  # fmt: skip
    done = client.post("/rules/add", data=form)
    assert done.status_code == 200 and f"Rule {name}: every job matching" in done.text
    [rule] = [r for r in read_rules() if r.filter == name]
    assert (rule.emails, rule.webhooks, rule.paused) == (
        ("ops@example.com",), ("http://127.0.0.1:9/hook",), False,
    )  # fmt: skip
    assert rule.spec["statuses"] == ["Error"]  # the filter's copy
    bad = client.post("/rules/add", data={**form, "email": "not-an-address"})
    assert "invalid email address" in bad.text
    for action, paused in (("pause", True), ("resume", False)):
        client.post(f"/rules/{action}", data={"csrf": state.csrf_token, "rule": name})
        assert [r.paused for r in read_rules() if r.name == name] == [paused]
    gone = client.post("/rules/remove", data={"csrf": state.csrf_token, "rule": name})
    assert f"Rule {name} removed." in gone.text
    assert [r for r in read_rules() if r.name == name] == []
    missing = client.post("/rules/remove", data={"csrf": state.csrf_token, "rule": name})
    assert f"no rule named {name!r}" in missing.text.replace("&#39;", "'")
