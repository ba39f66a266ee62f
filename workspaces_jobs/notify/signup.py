"""Subscribe to a job: record the subscribers, and email at once when the job has ended.

The one place that both writes the subscription record (:mod:`.subscriptions`) and
delivers (:mod:`.deliver`), so neither of those imports the other for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from prefect.client.orchestration import get_client

from workspaces_jobs import activity
from workspaces_jobs.notify.deliver import deliver_job
from workspaces_jobs.notify.subscriptions import (
    Record,
    add_subscribers,
    add_webhooks,
    canonical_job_id,
    check_subscribable,
    job_status_of,
    normalize_emails,
    read_subscriptions,
)
from workspaces_jobs.notify.webhooks import check_url
from workspaces_jobs.server import ensure_api


def subscribe(
    job_id: str,
    emails: Iterable[str],
    *,
    by: str | None = None,
    now: bool = False,
    webhooks: Iterable[str] = (),
    who: str | None = None,
    source: str | None = None,
) -> Record:
    """Subscribe ``emails`` (and webhook URLs) to a Pending or In-progress job
    (``now=True``: a finished one, notified at once). Invalid addresses or URLs and
    finished jobs are refused with a clear error. Recorded as ``notify`` activity.
    """
    emails, webhooks = list(emails), list(webhooks)
    ctx_who = activity.context_who() or by
    who, source = activity.actor(who or ctx_who, source)
    record = _subscribe(job_id, emails, by=by or who, now=now, webhooks=webhooks)
    targets = ", ".join([*emails, *webhooks])
    detail = f"to {targets}" + (" (now)" if now else "")
    activity.record(who, "notify", job_id=record.job_id, source=source, detail=detail)
    return record


def _subscribe(
    job_id: str,
    emails: Iterable[str],
    *,
    by: str | None,
    now: bool,
    webhooks: Iterable[str],
) -> Record:
    emails, urls = list(emails), [check_url(u) for u in webhooks]
    addresses = normalize_emails(emails) if (emails or not urls) else []
    job_id = canonical_job_id(job_id)
    ensure_api()
    with get_client(sync_client=True) as client:
        check_subscribable(client, job_id, now=now)
        record = add_subscribers(client, job_id, addresses, by=by) if addresses else None
        if urls:
            record = add_webhooks(client, job_id, urls, by=by)
        assert record is not None
        # The job may have ended while we wrote, after its hook looked for subscribers:
        # then nobody else would send soon, so we do (claims keep it to one email).
        ended = now or job_status_of(client, job_id).is_final
    if not ended:
        return record
    deliver_job(job_id, via="subscribe")
    return read_subscriptions(job_id)
