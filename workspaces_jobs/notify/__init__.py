"""Email notifications: subscribe to a job, get one email when it reaches a final status.

Public surface (the CLI, ``submit_job(notify=...)`` and the watchdog use only these):

* :func:`subscribe` / :func:`unsubscribe` / :func:`read_subscriptions` — the per-job
  subscription record, a Prefect Variable ``wsjobs-notify-<job id>``;
* :func:`deliver_job` / :func:`deliver_owed` — send what is owed, exactly once per
  subscriber even when several processes try at the same time;
* :class:`NotifySettings` — ``WSJOBS_SMTP_*`` / ``WSJOBS_NOTIFY_*``; :class:`NotifyError`.

Modules: ``subscriptions`` (the record), ``claims`` (atomic per-subscriber claims),
``smtp`` (settings, block, send with retries), ``render`` (templates), ``deliver``,
``listener`` (the job flows' final-status hook).
"""

from __future__ import annotations

from workspaces_jobs.notify.deliver import Outcome, deliver_job, deliver_owed
from workspaces_jobs.notify.smtp import NotifyError, NotifySettings
from workspaces_jobs.notify.subscriptions import (
    Record,
    Subscriber,
    normalize_emails,
    read_subscriptions,
    subscribe,
    unsubscribe,
)

__all__ = [
    "NotifyError",
    "NotifySettings",
    "Outcome",
    "Record",
    "Subscriber",
    "deliver_job",
    "deliver_owed",
    "normalize_emails",
    "read_subscriptions",
    "subscribe",
    "unsubscribe",
]
