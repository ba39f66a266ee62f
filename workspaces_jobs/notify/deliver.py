"""Send what is owed: render, claim, send with retries, record. Two ways in, one email.

* :func:`deliver_job` — one job. The flow's final-status hook calls it inside the job's
  process (:mod:`.listener`); ``wsjobs notify --now`` calls it for a finished job.
* :func:`deliver_owed` — every job in a final status with subscribers still owed an
  email (pending, or failed with attempts left). For jobs whose process died, jobs
  canceled while Pending (no process ever ran, so no hook) and deliveries that failed
  because the SMTP server was down. The watchdog and ``wsjobs notify --deliver`` call it.

Both may run at the same time for the same job: a subscriber is only emailed under an
atomic claim (:mod:`.claims`). Nothing here raises into a job: a delivery error is
recorded on the subscriber (``failed``, ``attempts``, ``last_error``) and logged.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.logging import get_logger

from workspaces_jobs.notify import claims
from workspaces_jobs.notify.outcome import NOT_CONFIGURED, RECOVERED_EPISODE, Outcome
from workspaces_jobs.notify.render import build_message, render
from workspaces_jobs.notify.smtp import (
    NotifyError,
    NotifySettings,
    SmtpConfig,
    load_config,
    redact,
    send_with_retries,
)
from workspaces_jobs.notify.subscriptions import (
    Subscriber,
    canonical_job_id,
    list_records,
    now_iso,
    read_record,
    set_subscriber,
)
from workspaces_jobs.status import MappedStatus

_log = get_logger(__name__)
#: Seconds to wait for a just-ended job's step runs to show up in the API.
SETTLE_TIMEOUT = 10.0
#: Failed steps whose last lines are fetched for the email (one API call each).
MAX_FAILED_STEPS = 20


def _tails(client: Any, job: Any, lines: int) -> dict[str, list[Any]]:
    """The last ``lines`` log lines of each failed step (newest last)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.client.schemas.sorting import LogSort

    from workspaces_jobs.jobfacts import log_from_api

    tails: dict[str, list[Any]] = {}
    if lines <= 0:
        return tails
    failed = [s for s in job.steps if s.status in ("Failed", "Crashed")][:MAX_FAILED_STEPS]
    by_id = {s.id: s for s in job.steps}
    for step in failed:
        logs = client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[UUID(step.id)])),
            limit=lines,
            sort=LogSort.TIMESTAMP_DESC,
        )
        tails[step.id] = [log_from_api(log, by_id) for log in reversed(logs)]
    return tails


def _read_settled_job(job_id: str) -> Any:
    """The job's facts, waiting (bounded) for step runs the server has not recorded yet.

    Task runs reach the API as events the server records a moment later, so a job that
    has just ended can read back with some devices still without steps; the email would
    then miss its failed steps. For a job that ran its devices to the end and ended in
    the last minute, re-read until every planned device has its steps.
    """
    from workspaces_jobs.apiread import read_job
    from workspaces_jobs.status import ErrorReason, JobStatus

    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        job = read_job(job_id, with_logs=False)
        ran_all = job.started is not None and (
            job.status in (JobStatus.COMPLETED.value, JobStatus.COMPLETED_WITH_ERRORS.value)
            or (job.status == JobStatus.ERROR.value and job.reason == ErrorReason.FAILED.value)
        )
        recent = job.ended is not None and datetime.now(UTC) - job.ended < timedelta(minutes=1)
        missing = any(d.status == JobStatus.PENDING.value for d in job.devices)
        if not (ran_all and recent and missing) or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def _flush_logs() -> None:
    """Inside a job's process, push queued log lines so the email can quote the last ones."""
    try:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
    except Exception:  # best effort: an email without the very last lines is still useful
        _log.debug("could not flush logs before rendering the email", exc_info=True)


def deliver_job(
    job_id: str,
    *,
    via: str = "api",
    settings: NotifySettings | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    final: MappedStatus | None = None,
) -> list[Outcome]:
    """Email every subscriber still owed one, if the job is in a final status.

    ``final`` is the status a hook has just seen: on cancellation the hook fires while
    the API still says Cancelling (Prefect then sets Cancelled without hooks), so the
    hook's word is taken for it.
    """
    from prefect.client.orchestration import get_client

    from workspaces_jobs.server import ensure_api

    ensure_api()
    with get_client(sync_client=True) as client:
        return _deliver_job(client, job_id, via, settings or NotifySettings(), logger, final)


def _deliver_job(
    client: Any,
    job_id: str,
    via: str,
    settings: NotifySettings,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    final: MappedStatus | None = None,
) -> list[Outcome]:
    from workspaces_jobs.apiread import job_link
    from workspaces_jobs.notify import alerts
    from workspaces_jobs.status import JobStatus

    log = logger or _log
    record = read_record(client, job_id)
    rules = alerts.read_rules_quietly(client, log)
    if not (record.subscribers or record.webhooks or rules):
        return []
    job = _read_settled_job(job_id)
    if not JobStatus(job.status).is_final:
        if final is None or not final.status.is_final:
            return []
        job.status = final.status.value
        job.reason = final.reason.value if final.reason else None
        job.ended = job.ended or datetime.now(UTC)
    recovered = bool(job.recovered)
    owed = [
        s for s in record.subscribers if s.owed(settings.notify_max_attempts, recovered=recovered)
    ]
    targets = alerts.targets_for(job, record, rules)
    if not owed and not targets:
        return []
    try:
        config = load_config(settings)
        problem = NOT_CONFIGURED
    except NotifyError as exc:
        config, problem = None, str(exc)
    if via == "hook":
        _flush_logs()
    tails = _tails(client, job, settings.notify_log_lines)
    link = job_link(job_id)
    outcomes = alerts.deliver_targets(
        client, job, targets, via=via, settings=settings, log=log, tails=tails, link=link
    )
    if config is None and owed:
        log.warning(f"Notify: {len(owed)} email(s) for job {job_id} wait: {problem}")
        for sub in owed:
            waiting = {"recovery_status": "pending"} if recovered else {}
            set_subscriber(client, job_id, sub.email, last_error=problem, **waiting)
        return [
            Outcome(job_id, s.email, "waiting", _attempts(s, recovered), problem) for s in owed
        ] + outcomes
    assert config is not None or not owed
    return [
        _deliver_one(client, job, sub, config, settings, via, tails, link, log)  # type: ignore[arg-type]
        for sub in owed
    ] + outcomes


def _attempts(sub: Subscriber, recovered: bool) -> int:
    return sub.recovery_attempts if recovered else sub.attempts


def _deliver_one(
    client: Any,
    job: Any,
    sub: Subscriber,
    config: SmtpConfig,
    settings: NotifySettings,
    via: str,
    tails: dict[str, list[Any]],
    link: str,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> Outcome:
    recovered = bool(job.recovered)
    episode = RECOVERED_EPISODE if recovered else ""
    got = claims.try_claim(
        client,
        job.id,
        sub.email,
        via=via,
        stale_after=settings.notify_claim_stale,
        max_attempts=settings.notify_max_attempts,
        episode=episode,
        extra={"kind": "email", "status": job.status},
    )
    if got.kind == "sent" and got.claim is not None:
        # Delivered by another process (or a record update was lost): repair the record.
        sent_at = str(got.claim.value.get("finished_at") or now_iso())
        set_subscriber(
            client,
            job.id,
            sub.email,
            **Subscriber.outcome_fields(
                recovered=recovered,
                status="sent",
                sent_at=sent_at,
                attempts=got.attempts,
                last_error=None,
            ),
        )
        return Outcome(job.id, sub.email, "already sent", got.attempts)
    if got.kind == "exhausted":
        set_subscriber(
            client,
            job.id,
            sub.email,
            **Subscriber.outcome_fields(
                recovered=recovered, status="failed", attempts=got.attempts
            ),
        )
        return Outcome(job.id, sub.email, "exhausted", got.attempts, sub.last_error)
    if got.kind == "busy" or got.claim is None:
        return Outcome(job.id, sub.email, "busy", got.attempts)
    claim = got.claim
    current = read_record(client, job.id).find(sub.email)
    if current is None:  # unsubscribed while we were getting here
        claims.finish(client, claim, sent=False, attempts=0, error="unsubscribed")
        return Outcome(job.id, sub.email, "removed")
    error: str | None
    try:
        rendered = render(job, link=link, tails=tails, subscriber=current)
        message = build_message(rendered, sender=config.sender, to=current.email, job_id=job.id)
    except Exception as exc:  # a bug, not an outage: count it, so it ends after max attempts
        log.exception(f"Notify: could not render the email for job {job.id}")
        tries, error = 1, redact(f"rendering failed: {type(exc).__name__}: {exc}", config)
    else:
        remaining = settings.notify_max_attempts - claim.prior_attempts
        tries, error = send_with_retries(
            config,
            message,
            retries=max(1, min(settings.notify_retries, remaining)),
            backoff=settings.notify_backoff,
        )
    total = claim.prior_attempts + tries
    claims.finish(client, claim, sent=error is None, attempts=tries, error=error)
    if error is None:
        set_subscriber(
            client,
            job.id,
            sub.email,
            **Subscriber.outcome_fields(
                recovered=recovered,
                status="sent",
                attempts=total,
                last_error=None,
                sent_at=now_iso(),
            ),
        )
        what = f"{job.status}, recovered after inactivity" if recovered else job.status
        log.info(f"Notify: emailed {current.email} about job {job.id} ({what})")
        return Outcome(job.id, sub.email, "sent", total)
    set_subscriber(
        client,
        job.id,
        sub.email,
        **Subscriber.outcome_fields(
            recovered=recovered, status="failed", attempts=total, last_error=error
        ),
    )
    log.warning(
        f"Notify: could not email {current.email} after {total} attempt(s): {error}; "
        "`wsjobs notify --deliver` (or the watchdog) retries"
    )
    return Outcome(job.id, sub.email, "failed", total, error)


def _maybe_owed(sub: Subscriber, max_attempts: int) -> bool:
    """Worth reading the job for: owed its email, or a recovery email already under way
    (``recovery_status`` set by an attempt or a wait) that is still owed."""
    if sub.owed(max_attempts):
        return True
    return sub.recovery_status is not None and sub.owed(max_attempts, recovered=True)


def deliver_owed(
    job_ids: list[str] | None = None,
    *,
    via: str = "deliver",
    settings: NotifySettings | None = None,
) -> list[Outcome]:
    """Deliver every email owed for jobs already in a final status (all jobs, or ``job_ids``).

    Safe to run at any time and from any number of processes at once.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from workspaces_jobs.jobfacts import job_from_flow_run
    from workspaces_jobs.server import ensure_api
    from workspaces_jobs.status import JobStatus

    settings = settings or NotifySettings()
    if job_ids is not None:
        job_ids = [canonical_job_id(j) for j in job_ids]
    ensure_api()
    with get_client(sync_client=True) as client:
        records = list_records(client, job_ids)
        owed = [
            r.job_id
            for r in records
            if any(_maybe_owed(s, settings.notify_max_attempts) for s in r.subscribers)
        ]
        # Rule notices and job webhooks keep their state in claims only: look again at
        # the jobs that ended lately (or the ones asked for), not at every job ever.
        from workspaces_jobs.notify.alerts import read_rules_quietly

        rules = read_rules_quietly(client, _log)
        with_hooks = {r.job_id for r in records if r.webhooks}
        recent = _recently_ended(client, settings.notify_lookback) if job_ids is None else []
        extra = [
            j for j in (job_ids if job_ids is not None else recent) if rules or j in with_hooks
        ]
        candidates = list(dict.fromkeys(owed + extra))
        final: list[str] = []
        for start in range(0, len(candidates), 200):
            chunk = [UUID(j) for j in candidates[start : start + 200]]
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            )
            final += [str(r.id) for r in runs if JobStatus(job_from_flow_run(r).status).is_final]
        outcomes: list[Outcome] = []
        for job_id in final:
            try:
                outcomes += _deliver_job(client, job_id, via, settings)
            except Exception as exc:  # one bad job must not stop the others
                _log.exception(f"Notify: delivering for job {job_id} failed")
                outcomes.append(Outcome(job_id, "", "failed", error=type(exc).__name__))
    # Rule notices and webhooks delivered before are found again (their claims say
    # "sent"): that is no news for the caller.
    return [o for o in outcomes if o.result != "already sent" or not _claims_only(o)]


def _claims_only(outcome: Outcome) -> bool:
    """A rule notice or a job webhook: its state lives in claims, not in a record."""
    return outcome.kind == "webhook" or outcome.rule is not None


def _recently_ended(client: Any, lookback: float) -> list[str]:
    """Jobs that reached a final state within ``lookback`` seconds (Prefect ``end_time``)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterTags,
    )

    from workspaces_jobs.runmeta import JOB_TAG

    since: Any = datetime.now(UTC) - timedelta(seconds=lookback)
    ids: list[str] = []
    offset, page = 0, 200
    while True:
        batch = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[JOB_TAG]),
                end_time=FlowRunFilterEndTime(after_=since),
            ),
            limit=page,
            offset=offset,
        )
        ids += [str(r.id) for r in batch]
        if len(batch) < page:
            return ids
        offset += page
