"""Notifications end to end: real jobs, the real Prefect API, a real SMTP server (aiosmtpd).

Every email is received by an aiosmtpd server on 127.0.0.1 that requires a login, so the
tests also check the password travels to the server and nowhere else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterName,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.states import Cancelled, Crashed
from smtpserver import PASSWORD, USER, SmtpServer, free_port, html_body, text_body

from workspaces_jobs.jobfacts import JobFact, LogFact, StepFact
from workspaces_jobs.jobs import job_state, start_executor, submit_job, wait_job
from workspaces_jobs.notify import (
    NotifyError,
    Record,
    deliver_job,
    deliver_owed,
    read_subscriptions,
    subscribe,
    unsubscribe,
)
from workspaces_jobs.notify.render import TEMPLATES, render
from workspaces_jobs.notify.subscriptions import Subscriber
from workspaces_jobs.status import JobStatus

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server


def address(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


def smtp_env(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """Executors inherit the environment, so this configures the hook path too."""
    monkeypatch.setenv("WSJOBS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("WSJOBS_SMTP_PORT", str(port))
    monkeypatch.setenv("WSJOBS_SMTP_USER", USER)
    monkeypatch.setenv("WSJOBS_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("WSJOBS_SMTP_FROM", "jobs@example.com")
    monkeypatch.setenv("WSJOBS_SMTP_TIMEOUT", "5")
    monkeypatch.setenv("WSJOBS_NOTIFY_RETRIES", "3")
    monkeypatch.setenv("WSJOBS_NOTIFY_BACKOFF", "0.05")


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    server = SmtpServer(free_port()).start()
    smtp_env(monkeypatch, server.port)
    yield server
    server.stop()


def deliveries_settled(job_id: str, email: str, timeout: float = 60) -> None:
    """Wait (bounded) until a round for (job, email) is ``sent`` and none is ``sending``.

    After that no process may email the address again (claims.py: a ``sent`` round ends
    all rounds), so the inbox count is final: no fixed sleep that a slow machine outruns.
    """
    from workspaces_jobs.notify.claims import MAX_ROUNDS, claim_name

    deadline = time.monotonic() + timeout
    while True:
        states = []
        with get_client(sync_client=True) as client:
            for round_no in range(1, MAX_ROUNDS + 1):
                found = client.read_variable_by_name(claim_name(job_id, email, round_no))
                if found is None:
                    break
                states.append(found.value.get("state") if isinstance(found.value, dict) else None)
        if "sent" in states and "sending" not in states:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries to {email} not settled in {timeout:g} s: {states}")
        time.sleep(0.2)


def wait_record(job_id: str, ok: Callable[[Record], bool], timeout: float = 90) -> Record:
    deadline = time.monotonic() + timeout
    record = read_subscriptions(job_id)
    while not ok(record) and time.monotonic() < deadline:
        time.sleep(0.3)
        record = read_subscriptions(job_id)
    return record


def executor_notes(*job_ids: str) -> Callable[[], str]:
    """For assertion messages: what the jobs' own processes said about notifying."""

    def notes() -> str:
        home = Path(os.environ["WSJOBS_HOME"]) / "executor-logs"
        lines = []
        for job_id in job_ids:
            path = home / f"{job_id}.log"
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            keep = [x for x in text.splitlines() if "Notify" in x or "Error" in x or "File" in x]
            lines += [f"{job_id}:", *keep[-15:]]
        return "\n".join(lines)

    return notes


def all_sent(record: Record) -> bool:
    return bool(record.subscribers) and all(s.status == "sent" for s in record.subscribers)


def wsjobs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


# --- templates (pure) -------------------------------------------------------------------


def _job(info: str) -> JobFact:
    t0 = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
    t1 = datetime(2026, 11, 28, 10, 1, 5, tzinfo=UTC)
    step = StepFact(
        id="s1", job_id="j", device="<dev>", step="boom", position=0, critical=True,
        status="Failed", state_name="Failed", exit_code=7, message="exit code 7: <b>bad</b>",
        started=t0, ended=t1,
    )  # fmt: skip
    return JobFact(
        id="0b7e1f0c-0000-4000-8000-000000000001", name="x", action="broken", info=info,
        owner="alice", status="Error", reason="failed", prefect_state_type="FAILED",
        prefect_state_name="Failed", state_message="1 of 1 devices failed", created=t0,
        started=t0, ended=t1, expected_start=None, progress=50.0, deployment_id=None,
        parameters={}, tags=[], canceled_by=None, rerun_of=None, updated=None, steps=[step],
    )  # fmt: skip


def test_hostile_text_is_escaped_in_html_and_kept_in_text() -> None:
    hostile = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    job = _job(hostile)
    line = LogFact(
        id="l", job_id=job.id, step_id="s1", device="<dev>", step="boom",
        ts=job.started or datetime.now(UTC), level="INFO", stream="out",
        message="<script>steal()</script>",
    )  # fmt: skip
    sub = Subscriber(email="a@example.com", subscribed_by="<bob>")
    mail = render(job, link="http://ui/runs/flow-run/x", tails={"s1": [line]}, subscriber=sub)
    assert "<script>" not in mail.html and "<img" not in mail.html and "<bob>" not in mail.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img" in mail.html
    assert "&lt;script&gt;steal()&lt;/script&gt;" in mail.html
    assert hostile in mail.text and "out | <script>steal()</script>" in mail.text
    assert mail.subject == f"[wsjobs] broken: Error (failed) — job {job.id}"
    for body in (mail.text, mail.html):
        assert "alice" in body and "1 min 5 s" in body and "http://ui/runs/flow-run/x" in body
        assert "exit code 7" in body


def test_templates_are_packaged_and_strict() -> None:
    folder = resources.files("workspaces_jobs.notify") / "templates"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".j2")) == sorted(TEMPLATES)
    from workspaces_jobs.notify.render import _env

    with pytest.raises(Exception, match="undefined"):
        _env(True).get_template("email.html.j2").render({})


# --- subscribing --------------------------------------------------------------------


def test_invalid_address_is_refused_before_a_job_exists() -> None:
    info = f"never-created-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotifyError, match="invalid email address 'not-an-address'"):
        submit_job("ok", target=["t1"], info=info, notify=["not-an-address"])
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=info))
        )
    assert runs == []
    out = wsjobs("run", "ok", "--devices", "t1", "--notify", "bob@", "--no-wait")
    assert out.returncode == 4 and out.stderr.startswith("error: invalid email address 'bob@'")
    out = wsjobs("notify", "nope", "--email", "a@example.com")
    assert out.returncode == 4 and out.stderr.startswith("error: 'nope' is not a job id")


@pytest.mark.slow
def test_subscribe_list_remove_and_finished_job_rules(smtp: SmtpServer) -> None:
    a, b = address("a"), address("b")
    job_id = submit_job("ok", target=["t1"], start=False)
    record = subscribe(job_id, [a, b.upper(), a], by="carol")
    assert [s.email.lower() for s in record.subscribers] == [a, b]
    assert all(s.status == "pending" and s.subscribed_by == "carol" for s in record.subscribers)
    with pytest.raises(NotifyError, match="invalid email"):
        subscribe(job_id, ["x@@example.com"])
    assert [s.email for s in unsubscribe(job_id, [b.upper()]).subscribers] == [a]
    with pytest.raises(NotifyError, match="is not subscribed"):
        unsubscribe(job_id, [b])
    # The contract other parts (the history sync) read: the raw variable value.
    with get_client(sync_client=True) as client:
        raw = client.read_variable_by_name(f"wsjobs-notify-{job_id}")
    assert raw is not None and raw.value["job_id"] == job_id
    assert set(raw.value["subscribers"][0]) == {
        "email", "status", "attempts", "last_error", "sent_at", "subscribed_at", "subscribed_by",
        "recovery_status", "recovery_attempts", "recovery_sent_at",
    }  # fmt: skip

    start_executor(job_id)
    assert wait_job(job_id, timeout=60) == JobStatus.COMPLETED
    assert len(smtp.inbox.wait_for(a)) == 1
    late = address("late")
    out = wsjobs("notify", job_id, "--email", late)
    assert (
        out.returncode == 4 and "already ended (Completed)" in out.stderr and "--now" in out.stderr
    )
    out = wsjobs("notify", job_id, "--email", late, "--now", "--json")
    assert out.returncode == 0, out.stderr
    listed = {s["email"]: s for s in json.loads(out.stdout)["subscribers"]}
    assert listed[late]["status"] == "sent" and listed[late]["attempts"] == 1
    assert len(smtp.inbox.wait_for(late)) == 1
    out = wsjobs("notify", "--list", job_id, "--json")
    assert {s["email"] for s in json.loads(out.stdout)["subscribers"]} == {a, late}
    assert PASSWORD not in out.stdout
    shown = json.loads(wsjobs("show", job_id, "--json", "--no-logs").stdout)
    assert {n["email"]: n["status"] for n in shown["notifications"]} == {a: "sent", late: "sent"}
    deliveries_settled(job_id, a)
    assert len(smtp.inbox.to(a)) == 1  # nothing sent twice by --now or --list


# --- delivery for every final status ---------------------------------------------------------


@pytest.mark.slow
def test_each_final_status_emails_every_subscriber_once(smtp: SmtpServer) -> None:
    a, b = address("a"), address("b")
    ok = submit_job("ok", target=["t1", "t2"], notify=[a, b], info="<script>x()</script>")
    mixed = submit_job("mixed", target=["all"], notify=[a])
    broken = submit_job("broken", target=["t1"], notify=[a])
    pending = submit_job("ok", target=["t1"], start=False, notify=[a])
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(pending), Cancelled(message="not today"), force=True)
    for job_id in (ok, mixed, broken):
        wait_job(job_id, timeout=90)
    hooks = executor_notes(ok, mixed, broken)
    assert len(smtp.inbox.wait_for(a, 3)) == 3, hooks()
    assert len(smtp.inbox.wait_for(b, 1)) == 1, hooks()
    for job_id in (ok, mixed, broken):  # each hook has recorded its delivery
        assert all_sent(wait_record(job_id, all_sent))
    # Canceled while Pending: no process, no hook. The out-of-process path sends it.
    outcomes = deliver_owed()
    assert [(o.job_id, o.email, o.result) for o in outcomes if o.email in (a, b)] == [
        (pending, a, "sent")
    ]
    by_job = {m["X-Wsjobs-Job-Id"]: m for m in smtp.inbox.wait_for(a, 4)}
    expected = {
        ok: "ok: Completed",
        mixed: "mixed: Completed with errors",
        broken: "broken: Error (failed)",
        pending: "ok: Canceled by the user",
    }
    assert sorted(by_job) == sorted(expected)
    for job_id, head in expected.items():
        assert by_job[job_id]["Subject"] == f"[wsjobs] {head} — job {job_id}"
        assert job_id in text_body(by_job[job_id]) and job_id in html_body(by_job[job_id])
    assert "&lt;script&gt;x()&lt;/script&gt;" in html_body(by_job[ok])
    assert "<script>" not in html_body(by_job[ok])
    failed = text_body(by_job[broken])
    assert "Failed step boom on t1 (exit code 7)" in failed, failed
    assert "out | about to fail" in failed, failed
    assert "check failed" in text_body(by_job[mixed])  # the failed step's stderr line
    assert smtp.inbox.to(b)[0]["X-Wsjobs-Job-Id"] == ok
    for job_id in expected:
        record = wait_record(job_id, all_sent)
        assert all(s.attempts == 1 and s.sent_at and not s.last_error for s in record.subscribers)
    # Running the out-of-process path again sends nothing more.
    assert [o for o in deliver_owed() if o.email in (a, b)] == []
    assert len(smtp.inbox.to(a)) == 4 and len(smtp.inbox.to(b)) == 1

    # The SMTP password reached the server and nothing else.
    assert (USER, PASSWORD) in smtp.inbox.logins
    home = Path(os.environ["WSJOBS_HOME"])
    for log in (home / "executor-logs").glob("*.log"):
        assert PASSWORD not in log.read_text(errors="replace")
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(j) for j in expected]))
        )
        variables = client.read_variables(limit=200)
    assert any("Notify: emailed" in log.message for log in logs)
    assert all(PASSWORD not in log.message for log in logs)
    assert all(PASSWORD not in json.dumps(v.value) for v in variables)


@pytest.mark.slow
def test_smtp_down_then_up_is_delivered_later_exactly_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()  # nothing listens here yet
    smtp_env(monkeypatch, port)
    a = address("down")
    job_id = submit_job("ok", target=["t1"], notify=[a])
    assert wait_job(job_id, timeout=60) == JobStatus.COMPLETED  # the mail never decides
    record = wait_record(job_id, lambda r: r.subscribers[0].status == "failed")
    sub = record.subscribers[0]
    assert sub.attempts == 3 and sub.sent_at is None
    assert sub.last_error and "refused" in sub.last_error.lower()
    assert job_state(job_id)[0] == JobStatus.COMPLETED

    server = SmtpServer(port).start()
    try:
        results: list[str] = []

        def deliver() -> None:
            results.extend(o.result for o in deliver_owed([job_id]))

        threads = [threading.Thread(target=deliver) for _ in range(3)]
        for t in threads:
            t.start()
        deliver_job(job_id)  # and the single-job path at the same time
        for t in threads:
            t.join()
        assert len(server.inbox.wait_for(a, 1)) == 1
        record = wait_record(job_id, all_sent)
        assert record.subscribers[0].attempts == 4 and record.subscribers[0].last_error is None
        assert deliver_owed([job_id]) == []
        deliveries_settled(job_id, a)
        assert len(server.inbox.to(a)) == 1
        assert results.count("sent") <= 1
    finally:
        server.stop()


@pytest.mark.slow
def test_hook_and_deliver_owed_racing_send_one_email(smtp: SmtpServer) -> None:
    a = address("race")
    job_id = submit_job("ok", target=["t1"], notify=[a])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not smtp.inbox.to(a):
        deliver_owed([job_id])  # races the job's own hook as soon as the job ends
    assert smtp.inbox.to(a), "no email within 60 s"
    for _ in range(3):
        deliver_owed([job_id])
    deliveries_settled(job_id, a)
    assert len(smtp.inbox.to(a)) == 1
    assert all_sent(wait_record(job_id, all_sent))


@pytest.mark.slow
def test_crashed_job_notifies_through_deliver_owed(smtp: SmtpServer) -> None:
    a = address("crash")
    job_id = submit_job("slow", target=["t1"], params={"seconds": "3"}, start=False, notify=[a])
    proc = start_executor(job_id)
    deadline = time.monotonic() + 60
    while job_state(job_id)[0] != JobStatus.IN_PROGRESS and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # no hook can run
    proc.wait(timeout=10)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            UUID(job_id), Crashed(message="executor process died"), force=True
        )
    assert deliver_owed([job_id])[0].result == "sent"
    [mail] = smtp.inbox.wait_for(a)
    assert mail["Subject"] == f"[wsjobs] slow: Error (crashed) — job {job_id}"
    assert "executor process died" in text_body(mail)


# --- configuration, secrets, concurrency (no executor needed: jobs canceled while Pending) ---


def canceled_job(*emails: str) -> str:
    job_id = submit_job("ok", target=["t1"], start=False, notify=list(emails))
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(job_id), Cancelled(), force=True)
    return job_id


def test_concurrent_subscribers_are_all_kept() -> None:
    job_id = submit_job("ok", target=["t1"], start=False)
    emails = [address(f"c{i}") for i in range(6)]
    errors: list[BaseException] = []

    def one(email: str) -> None:
        try:
            subscribe(job_id, [email])
        except BaseException as exc:  # surfaced below: a thread's error is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(e,)) for e in emails]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(s.email for s in read_subscriptions(job_id).subscribers) == sorted(emails)


def test_wrong_password_is_recorded_without_the_password(
    smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"{PASSWORD}-wrong"
    monkeypatch.setenv("WSJOBS_SMTP_PASSWORD", wrong)
    a = address("auth")
    job_id = canceled_job(a)
    [outcome] = deliver_job(job_id)
    assert outcome.result == "failed" and outcome.attempts == 3
    assert outcome.error and "SMTPAuthenticationError" in outcome.error
    sub = read_subscriptions(job_id).subscribers[0]
    assert sub.status == "failed" and sub.last_error == outcome.error
    assert (USER, wrong) in smtp.inbox.logins and smtp.inbox.to(a) == []
    assert "could not email" in caplog.text and "535" in caplog.text
    assert wrong not in caplog.text
    assert wrong not in json.dumps(read_subscriptions(job_id).to_value())


def test_both_tls_modes_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from workspaces_jobs.notify import NotifySettings

    monkeypatch.setenv("WSJOBS_SMTP_SSL", "true")
    monkeypatch.setenv("WSJOBS_SMTP_STARTTLS", "true")
    with pytest.raises(ValidationError, match="choose one"):
        NotifySettings()


def test_smtp_settings_from_a_prefect_email_block(
    smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_email import EmailServerCredentials

    for name in ("HOST", "PORT", "USER", "PASSWORD"):
        monkeypatch.delenv(f"WSJOBS_SMTP_{name}")
    block = f"wsjobs-test-{uuid.uuid4().hex[:8]}"
    EmailServerCredentials(
        smtp_server="127.0.0.1",
        smtp_type="INSECURE",
        smtp_port=smtp.port,
        username=USER,
        password=PASSWORD,
    ).save(block)
    monkeypatch.setenv("WSJOBS_SMTP_BLOCK", block)
    a = address("block")
    job_id = canceled_job(a)
    assert [o.result for o in deliver_job(job_id)] == ["sent"]
    assert smtp.inbox.wait_for(a)[0]["From"] == "jobs@example.com"
    monkeypatch.setenv("WSJOBS_SMTP_BLOCK", "no-such-block")
    b = address("noblock")
    [waiting] = deliver_job(canceled_job(b))
    assert waiting.result == "waiting" and "no EmailServerCredentials block" in (
        waiting.error or ""
    )


def test_cancel_through_the_lifecycle_api_emails_at_once(smtp: SmtpServer) -> None:
    from workspaces_jobs.lifecycle import cancel_job

    a = address("cancel")
    job_id = submit_job("ok", target=["t1"], start=False, notify=[a])
    cancel_job(job_id, by="dave")  # runs the status hook for the job: our listener
    [mail] = smtp.inbox.wait_for(a)
    assert mail["Subject"] == f"[wsjobs] ok: Canceled by the user — job {job_id}"
    assert "Canceled by dave" in text_body(mail)
    assert deliver_owed([job_id]) == [] and len(smtp.inbox.to(a)) == 1


def test_watchdog_flow_delivers_what_is_owed(smtp: SmtpServer) -> None:
    from workspaces_jobs.flows.watchdog import watchdog

    a = address("watchdog")
    job_id = canceled_job(a)  # canceled straight through the API: no hook ran
    watchdog.fn(grace=3600.0)
    assert len(smtp.inbox.wait_for(a)) == 1
    assert all_sent(read_subscriptions(job_id))
