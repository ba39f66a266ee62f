"""Issue #22 end to end: inactivity episodes told by email, rules, webhooks.

Real jobs against the real Prefect API, a real SMTP server (aiosmtpd) and a local HTTP
receiver on 127.0.0.1. Every wait is for a condition with a bounded deadline; a check
that "nothing more came" follows a condition that proves the sender had its chance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from httpreceiver import Receiver
from prefect.client.orchestration import get_client
from smtpserver import SmtpServer, free_port, html_body, text_body
from test_notify import smtp_env

from workspaces_jobs.jobs import read_job, start_executor, submit_job, wait_job
from workspaces_jobs.notify import deliver_job, deliver_owed, read_subscriptions, subscribe
from workspaces_jobs.notify.alerts import delivery_log
from workspaces_jobs.notify.rules import read_rules, remove_rule
from workspaces_jobs.notify.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from workspaces_jobs.reporting.filters import FilterSpec
from workspaces_jobs.reporting.saved import save_filter
from workspaces_jobs.reporting.store import open_store


def wsjobs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def delivery_log_of(job_id: str) -> list[dict[str, Any]]:
    with get_client(sync_client=True) as client:
        return delivery_log(client, job_id)


def address(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


def subject(message: Any) -> str:
    """The subject as read: a long one is folded, and unfolding may double a space."""
    return " ".join(str(message["Subject"]).split())


def until(check: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.2)


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    server = SmtpServer(free_port()).start()
    smtp_env(monkeypatch, server.port)
    yield server
    server.stop()


# --- inactivity episodes ----------------------------------------------------------------


def test_recovered_job_emails_once_per_episode(smtp: SmtpServer) -> None:
    a = address("episodes")
    job_id = submit_job("quiet-then-done", target=["t1"], params={"quiet": "4"}, notify=[a])
    first, second = until(lambda: len(smtp.inbox.to(a)) >= 2 and smtp.inbox.to(a), what="2 mails")  # type: ignore[misc]
    assert subject(first) == f"[wsjobs] quiet-then-done: Error (inactivity) — job {job_id}"
    assert subject(second) == (
        f"[wsjobs] quiet-then-done: Completed, recovered after inactivity — job {job_id}"
    )
    assert "recovered after inactivity" in text_body(second)
    assert "Recovered after inactivity." in html_body(second)
    assert "recovered after inactivity" not in text_body(first)
    sub = until(
        lambda: (s := read_subscriptions(job_id).subscribers[0]).recovery_status == "sent" and s,
        what="recovery recorded",
    )
    assert (sub.status, sub.attempts, sub.recovery_attempts) == ("sent", 1, 1)  # type: ignore[attr-defined]
    job = read_job(job_id, with_logs=False)
    assert (job.status, job.recovered) == ("Completed", True)
    # Everything owed was delivered: the out-of-process path sends nothing more.
    assert [o for o in deliver_owed([job_id])] == []
    assert len(smtp.inbox.to(a)) == 2


def test_hard_limit_sends_no_second_email(smtp: SmtpServer) -> None:
    a = address("hardlimit")
    job_id = submit_job("silent", target=["t1"], notify=[a])
    until(
        lambda: read_job(job_id, with_logs=False).prefect_state_name == "TimedOut", what="TimedOut"
    )
    [mail] = smtp.inbox.wait_for(a, 1)
    assert subject(mail) == f"[wsjobs] silent: Error (inactivity) — job {job_id}"
    # The job's process has ended (its hook ran for TimedOut); nothing is owed any more.
    assert deliver_owed([job_id]) == []
    assert len(smtp.inbox.to(a)) == 1


# --- rules and webhooks --------------------------------------------------------------------

SECRET = "hook-s3cret-wsjobs-22"


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("WSJOBS_WEBHOOK_SECRET", SECRET)  # executors inherit it
    receiver = Receiver(free_port()).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def rule_filter() -> Iterator[tuple[str, str]]:
    """A saved filter only this test's jobs match (a unique info token); its rule is
    removed afterwards, so no other test's job is ever notified by it."""
    token = f"tok{uuid.uuid4().hex[:10]}"
    name = f"rule-{token}"
    spec = FilterSpec.make(age="all", statuses=["error", "completed-with-errors"], search=token)
    with open_store() as con:
        save_filter(con, name, spec)
    yield name, token
    for rule in read_rules():
        if rule.filter == name:
            remove_rule(rule.name)


def test_a_rule_matching_3_of_5_jobs_sends_3_notices(
    smtp: SmtpServer, hooks: Receiver, rule_filter: tuple[str, str]
) -> None:
    name, token = rule_filter
    ops = address("ops")
    made = wsjobs("notify", "--filter", name, "--email", ops, "--webhook", hooks.url, "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["emails"] == [ops]
    listed = json.loads(wsjobs("notify", "--rules", "--json").stdout)
    assert [r["webhooks"] for r in listed if r["name"] == name] == [[hooks.url]]
    plan = [("ok", ["t1"]), ("broken", ["t1"]), ("mixed", ["all"]), ("ok", ["t2"]),
            ("broken", ["t2"])]  # fmt: skip
    ids = [submit_job(a, target=t, info=f"{token} #{i}") for i, (a, t) in enumerate(plan)]
    for job_id in ids:
        wait_job(job_id, timeout=90)
    matched = {ids[1], ids[2], ids[4]}
    mails = smtp.inbox.wait_for(ops, 3)
    posts = hooks.wait_for(3)
    assert {m["X-Wsjobs-Job-Id"] for m in mails} == matched
    for mail in mails:
        assert subject(mail).endswith(f"[rule {name}]")
        assert f'rule "{name}" matched this job' in text_body(mail)
    bodies = [json.loads(p.body) for p in posts]
    assert {b["job_id"] for b in bodies} == matched
    for post, body in zip(posts, bodies, strict=True):
        assert verify(SECRET, post.body, post.headers.get(SIGNATURE_HEADER))
        assert not verify("wrong", post.body, post.headers.get(SIGNATURE_HEADER))
        assert body["rule"] == name and body["status"] in ("Error", "Completed with errors")
        assert {"action", "reason", "owner", "info", "devices_ok", "devices_failed", "link"} <= set(
            body
        )  # noqa: E501
    mixed = next(b for b in bodies if b["job_id"] == ids[2])
    assert (mixed["devices_ok"], mixed["devices_failed"], mixed["status"]) == (
        2, 1, "Completed with errors",
    )  # fmt: skip
    # The retry path finds them delivered: nothing is sent twice.
    assert [o for o in deliver_owed(ids) if o.result == "sent"] == []
    assert len(smtp.inbox.to(ops)) == 3 and len(hooks.to()) == 3
    log = json.loads(wsjobs("notify", "--log", ids[1], "--json").stdout)
    assert sorted((r["kind"], r["state"], r["rule"]) for r in log) == [
        ("email", "sent", name), ("webhook", "sent", name),
    ]  # fmt: skip
    assert all(SECRET not in json.dumps(r) for r in log)
    # A paused rule notifies nobody; removed, it is gone.
    assert wsjobs("notify", "--pause", name).returncode == 0
    paused = submit_job("broken", target=["t3"], info=f"{token} paused")
    wait_job(paused, timeout=90)
    assert [o for o in deliver_owed([paused])] == []
    assert wsjobs("notify", "--remove-rule", name).returncode == 0
    assert name not in [r["name"] for r in json.loads(wsjobs("notify", "--rules", "--json").stdout)]
    assert len(smtp.inbox.to(ops)) == 3 and len(hooks.to()) == 3


def test_webhook_receiver_down_then_up_is_delivered_once_across_racing_deliverers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WSJOBS_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("WSJOBS_NOTIFY_BACKOFF", "0.05")
    receiver = Receiver(free_port())  # not started: the endpoint is down
    job_id = submit_job("ok", target=["t1"], start=False)
    subscribe(job_id, [], webhooks=[receiver.url])
    start_executor(job_id)
    wait_job(job_id, timeout=90)

    def rounds() -> list[dict[str, Any]]:
        return [r for r in delivery_log_of(job_id) if r["kind"] == "webhook"]

    failed = until(lambda: [r for r in rounds() if r["state"] == "failed"], what="failed round")
    assert "ConnectError" in str(failed[0]["error"])  # type: ignore[index]
    receiver.start()
    try:
        results: list[str] = []

        def deliver() -> None:
            results.extend(o.result for o in deliver_owed([job_id]))

        threads = [threading.Thread(target=deliver) for _ in range(4)]
        for t in threads:
            t.start()
        results.extend(o.result for o in deliver_job(job_id))  # a fifth, at the same time
        for t in threads:
            t.join()
        [post] = receiver.wait_for(1)
        assert results.count("sent") == 1, results
        assert verify(SECRET, post.body, post.headers.get(SIGNATURE_HEADER))
        assert json.loads(post.body)["job_id"] == job_id
        assert post.headers.get(DELIVERY_HEADER, "").startswith(f"wsjobs-hookclaim-{job_id}")
        # Every deliverer has returned: none of them can still send.
        assert deliver_owed([job_id]) == []
        assert len(receiver.to()) == 1
        states = [r["state"] for r in rounds()]
        assert sorted(states) == ["failed", "sent"]
    finally:
        receiver.stop()


# --- Prefect Automations ---------------------------------------------------------------------


def test_a_prefect_automation_reacts_to_workspaces_job_error() -> None:
    """The documented automation (docs/notifications.md), made through the API, fires on
    a job's Error event."""
    from prefect.events.actions import DoNothing
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    job_id = submit_job("broken", target=["t1"], start=False)
    with get_client(sync_client=True) as client:
        automation_id = client.create_automation(
            AutomationCore(
                name=f"wsjobs-errors-{job_id[:8]}",
                trigger=EventTrigger(
                    expect={"workspaces.job.error"},
                    match={"prefect.resource.id": f"prefect.flow-run.{job_id}"},
                    posture=Posture.Reactive,
                    threshold=1,
                    within=0,
                ),
                actions=[DoNothing()],
            )
        )
    try:
        start_executor(job_id)
        wait_job(job_id, timeout=90)

        def fired() -> list[dict[str, Any]]:
            with get_client(sync_client=True) as client:
                response = client.request(
                    "POST",
                    "/events/filter",
                    json={
                        "filter": {
                            "event": {"name": ["prefect.automation.triggered"]},
                            "resource": {"id": [f"prefect.automation.{automation_id}"]},
                        },
                        "limit": 10,
                    },
                )
            return list(response.json().get("events", []))

        events = until(fired, timeout=90, what="the automation firing")
        assert len(events) == 1  # type: ignore[arg-type]
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(automation_id)
