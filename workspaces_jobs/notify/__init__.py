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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workspaces_jobs.notify.deliver import deliver_job, deliver_owed
    from workspaces_jobs.notify.outcome import Outcome
    from workspaces_jobs.notify.signup import subscribe
    from workspaces_jobs.notify.smtp import NotifyError, NotifySettings
    from workspaces_jobs.notify.subscriptions import (
        Record,
        Subscriber,
        normalize_emails,
        read_subscriptions,
        unsubscribe,
    )

#: Where each public name lives. Imported on first use: ``deliver`` imports Prefect, and a
#: read command that needs only the subscription record must not pay for that (#19).
_HOMES = {
    "Outcome": "outcome",
    "deliver_job": "deliver",
    "deliver_owed": "deliver",
    "NotifyError": "smtp",
    "NotifySettings": "smtp",
    "Record": "subscriptions",
    "Subscriber": "subscriptions",
    "normalize_emails": "subscriptions",
    "read_subscriptions": "subscriptions",
    "subscribe": "signup",
    "unsubscribe": "subscriptions",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)


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
