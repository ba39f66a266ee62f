"""Who wants an email about a job: one Prefect Variable per job, reachable from anywhere.

The variable ``wsjobs-notify-<job id>`` holds (a fixed contract: the history sync copies
it into the ``notifications`` table)::

    {"job_id": "<uuid>",
     "subscribers": [{"email": str, "status": "pending" | "sent" | "failed",
                      "attempts": int, "last_error": str | null, "sent_at": iso | null,
                      "subscribed_at": iso, "subscribed_by": str,
                      "recovery_status": null | "pending" | "sent" | "failed",
                      "recovery_attempts": int, "recovery_sent_at": iso | null}]}

The ``recovery_*`` fields are the second email of a job that recovered after inactivity.

Because it lives in the Prefect API, a subscription made from another machine, before the
job's process even exists, is seen by whichever process ends up delivering.

Prefect variables have no compare-and-swap, so a read-modify-write of the record could
lose a concurrent writer's change (measured: 6 threads subscribing at once kept 2 of 6
addresses with a write-then-verify loop). Creating a variable, though, is atomic — a
second create of the same name fails with 409 — so writers take a lock variable
``wsjobs-notifylock-<job id>`` around the few milliseconds of read, change, write, and
delete it after. A lock left by a dead process is broken after 15 s.

This record is for people (and the history). Whether a subscriber has been emailed is
decided by the claims in :mod:`.claims`, also atomic, and the record is repaired from
them, so even a damaged record can never cause a second email.
"""

from __future__ import annotations

import getpass
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from workspaces_jobs.notify.smtp import NotifyError

VARIABLE_PREFIX = "wsjobs-notify-"
_NAME_RE = re.compile(
    r"^wsjobs-notify-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
#: The record's lock (not ``wsjobs-notify-`` so it is never taken for a record).
LOCK_PREFIX = "wsjobs-notifylock-"
#: A lock older than this was left by a process that died while writing; it is broken.
LOCK_STALE = 15.0
#: How long a writer waits for the lock before giving up with an error.
LOCK_WAIT = 30.0
#: Prefect refuses variable values over 5,000 characters of JSON; stay clear of it.
MAX_RECORD_CHARS = 4800

Status = Literal["pending", "sent", "failed"]


def variable_name(job_id: str) -> str:
    return f"{VARIABLE_PREFIX}{job_id.lower()}"


def job_id_of(name: str) -> str | None:
    """The job id in a subscription variable's name; None for any other variable."""
    match = _NAME_RE.match(name)
    return match.group(1) if match else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Subscriber:
    email: str
    status: Status = "pending"
    attempts: int = 0
    last_error: str | None = None
    sent_at: str | None = None
    subscribed_at: str = field(default_factory=now_iso)
    subscribed_by: str = ""
    # The second email, for a job that recovered after inactivity (None: not owed yet).
    recovery_status: Status | None = None
    recovery_attempts: int = 0
    recovery_sent_at: str | None = None

    def owed(self, max_attempts: int, *, recovered: bool = False) -> bool:
        """Still to be emailed: pending, or failed with attempts left.

        For a job that recovered after inactivity the email owed is the recovery one,
        whatever happened to the Error (inactivity) one: that status is over.
        """
        if recovered:
            status, attempts = self.recovery_status or "pending", self.recovery_attempts
        else:
            status, attempts = self.status, self.attempts
        return status == "pending" or (status == "failed" and attempts < max_attempts)

    @staticmethod
    def outcome_fields(
        *, recovered: bool, status: Status, attempts: int, sent_at: str | None = None, **rest: Any
    ) -> dict[str, Any]:
        """The record fields a delivery outcome sets: the recovery ones for a recovery."""
        if recovered:
            fields = {"recovery_status": status, "recovery_attempts": attempts, **rest}
            if sent_at is not None:
                fields["recovery_sent_at"] = sent_at
            return fields
        fields = {"status": status, "attempts": attempts, **rest}
        if sent_at is not None:
            fields["sent_at"] = sent_at
        return fields

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> Subscriber:
        status = value.get("status")
        return cls(
            email=str(value["email"]),
            status=status if status in ("pending", "sent", "failed") else "pending",
            attempts=int(value.get("attempts") or 0),
            last_error=value.get("last_error"),
            sent_at=value.get("sent_at"),
            subscribed_at=str(value.get("subscribed_at") or ""),
            subscribed_by=str(value.get("subscribed_by") or ""),
            recovery_status=(
                value.get("recovery_status")
                if value.get("recovery_status") in ("pending", "sent", "failed")
                else None
            ),
            recovery_attempts=int(value.get("recovery_attempts") or 0),
            recovery_sent_at=value.get("recovery_sent_at"),
        )


@dataclass(frozen=True)
class Hook:
    """A webhook subscribed to one job; its deliveries are logged in claims (``.alerts``)."""

    url: str
    subscribed_at: str = field(default_factory=now_iso)
    subscribed_by: str = ""


@dataclass(frozen=True)
class Record:
    job_id: str
    subscribers: tuple[Subscriber, ...] = ()
    webhooks: tuple[Hook, ...] = ()

    def to_value(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "job_id": self.job_id,
            "subscribers": [asdict(s) for s in self.subscribers],
        }
        if self.webhooks:
            value["webhooks"] = [asdict(h) for h in self.webhooks]
        return value

    @classmethod
    def from_value(cls, job_id: str, value: Any) -> Record:
        subs = value.get("subscribers", []) if isinstance(value, dict) else []
        hooks = value.get("webhooks", []) if isinstance(value, dict) else []
        return cls(
            job_id,
            tuple(Subscriber.from_value(s) for s in subs if "email" in s),
            tuple(
                Hook(
                    str(h["url"]),
                    str(h.get("subscribed_at") or ""),
                    str(h.get("subscribed_by") or ""),
                )
                for h in hooks
                if isinstance(h, dict) and h.get("url")
            ),
        )

    def find(self, email: str) -> Subscriber | None:
        key = email.casefold()
        return next((s for s in self.subscribers if s.email.casefold() == key), None)


def normalize_email(address: str) -> str:
    """A syntactically valid address, normalized; ValueError with the reason otherwise.

    No DNS lookup: subscribing must work offline and on hosts without a resolver, and a
    dead domain shows up as a delivery error in the record.
    """
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise NotifyError(f"invalid email address {address!r}: {exc}") from exc


def normalize_emails(addresses: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for address in addresses:
        normal = normalize_email(address)
        seen.setdefault(normal.casefold(), normal)
    if not seen:
        raise NotifyError("no email address given: pass --email ADDRESS")
    return list(seen.values())


def read_record(client: Any, job_id: str) -> Record:
    variable = client.read_variable_by_name(variable_name(job_id))
    return Record.from_value(job_id, variable.value if variable else None)


@contextmanager
def _locked(client: Any, job_id: str) -> Iterator[None]:
    """Hold the job's record lock: a variable whose creation is atomic (see module doc)."""
    from prefect.client.schemas.actions import VariableCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = f"{LOCK_PREFIX}{job_id.lower()}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            client.create_variable(
                VariableCreate(name=name, value={"token": token, "pid": os.getpid()})
            )
            break
        except ObjectAlreadyExists:
            held = client.read_variable_by_name(name)
            if held is not None and held.created is not None:
                age = (datetime.now(UTC) - held.created).total_seconds()
                if age > LOCK_STALE:  # its holder died inside a write of a few ms
                    with suppress(ObjectNotFound):
                        client.delete_variable_by_name(name)
                    continue
            if time.monotonic() > deadline:
                raise NotifyError(
                    f"the subscriptions of job {job_id} stayed locked for {LOCK_WAIT:g} s "
                    f"(variable {name}); try again in a moment"
                ) from None
            time.sleep(random.uniform(0.02, 0.08))
    try:
        yield
    finally:
        held = client.read_variable_by_name(name)
        if held is not None and isinstance(held.value, dict) and held.value.get("token") == token:
            with suppress(ObjectNotFound):
                client.delete_variable_by_name(name)


def mutate(client: Any, job_id: str, change: Callable[[Record], Record]) -> Record:
    """Apply ``change`` to the job's record under the record lock; return the new record."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    name = variable_name(job_id)
    with _locked(client, job_id):
        variable = client.read_variable_by_name(name)
        current = Record.from_value(job_id, variable.value if variable else None)
        wanted = change(current)
        if wanted == current:
            return current
        value = wanted.to_value()
        if len(_json(value)) > MAX_RECORD_CHARS:
            raise NotifyError(
                f"too many subscribers for job {job_id} (the Prefect variable holding them "
                "is limited to 5,000 characters): subscribe a mailing-list address instead"
            )
        if variable is None:
            client.create_variable(VariableCreate(name=name, value=value))
        else:
            client.update_variable(VariableUpdate(name=name, value=value))
        return wanted


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def add_subscribers(
    client: Any, job_id: str, emails: Iterable[str], *, by: str | None = None
) -> Record:
    """Subscribe already-normalized ``emails`` (existing ones are left as they are)."""
    emails = list(emails)
    who = by or getpass.getuser()

    def change(record: Record) -> Record:
        new = [Subscriber(email=e, subscribed_by=who) for e in emails if record.find(e) is None]
        return replace(record, subscribers=record.subscribers + tuple(new)) if new else record

    return mutate(client, job_id, change)


def add_webhooks(client: Any, job_id: str, urls: Iterable[str], *, by: str | None = None) -> Record:
    """Subscribe already-checked webhook ``urls`` to the job (existing ones are kept)."""
    urls = list(urls)
    who = by or getpass.getuser()

    def change(record: Record) -> Record:
        have = {h.url for h in record.webhooks}
        new = tuple(Hook(u, subscribed_by=who) for u in dict.fromkeys(urls) if u not in have)
        return replace(record, webhooks=record.webhooks + new) if new else record

    return mutate(client, job_id, change)


def remove_webhooks(client: Any, job_id: str, urls: Iterable[str]) -> Record:
    gone = set(urls)

    def change(record: Record) -> Record:
        return replace(record, webhooks=tuple(h for h in record.webhooks if h.url not in gone))

    return mutate(client, job_id, change)


def remove_subscribers(client: Any, job_id: str, emails: Iterable[str]) -> Record:
    keys = {e.casefold() for e in emails}

    def change(record: Record) -> Record:
        kept = tuple(s for s in record.subscribers if s.email.casefold() not in keys)
        return replace(record, subscribers=kept)

    return mutate(client, job_id, change)


def set_subscriber(client: Any, job_id: str, email: str, **fields: Any) -> Record:
    """Record a delivery outcome (status, attempts, last_error, sent_at) for one address."""

    def change(record: Record) -> Record:
        subs = tuple(
            replace(s, **fields) if s.email.casefold() == email.casefold() else s
            for s in record.subscribers
        )
        return replace(record, subscribers=subs)

    return mutate(client, job_id, change)


def list_records(client: Any, job_ids: Iterable[str] | None = None) -> list[Record]:
    """Every subscription record (or those of ``job_ids``), paging through the API."""
    if job_ids is not None:
        return [read_record(client, j) for j in job_ids]
    from workspaces_jobs.apipages import iter_variables

    return [
        Record.from_value(job_id, item.get("value"))
        for item in iter_variables(client, VARIABLE_PREFIX)
        if (job_id := job_id_of(item["name"]))
    ]


def job_status_of(client: Any, job_id: str) -> Any:
    """The job's status from one flow-run read (no progress artifact needed here)."""
    from workspaces_jobs.gateway import read_flow_run
    from workspaces_jobs.jobfacts import job_from_flow_run
    from workspaces_jobs.status import JobStatus

    return JobStatus(job_from_flow_run(read_flow_run(client, job_id)).status)


def check_subscribable(client: Any, job_id: str, *, now: bool) -> None:
    """Subscriptions are for Pending / In progress jobs; ``now`` is for ended ones."""
    status = job_status_of(client, job_id)
    if status.is_final and not now:
        raise NotifyError(
            f"job {job_id} has already ended ({status.value}); subscriptions are for jobs "
            "that are Pending or In progress. Add --now to get its summary emailed now"
        )
    if now and not status.is_final:
        raise NotifyError(
            f"job {job_id} is {status.value}: --now is for jobs that have ended; "
            "without it the email goes out when the job ends"
        )


def canonical_job_id(job_id: str) -> str:
    """The full job id of ``job_id`` (a full id or any unique prefix)."""
    from workspaces_jobs.gateway import resolve_job_id

    return resolve_job_id(job_id)


def unsubscribe(
    job_id: str,
    emails: Iterable[str],
    *,
    webhooks: Iterable[str] = (),
    who: str | None = None,
    source: str | None = None,
) -> Record:
    """Remove ``emails`` (and webhook URLs) from a job's subscribers; one that is not there
    is an error and nothing is removed. Recorded as ``unsubscribe`` activity."""
    from workspaces_jobs import activity

    emails, webhooks = list(emails), list(webhooks)
    who, source = activity.actor(who, source)
    record = _unsubscribe(job_id, emails, webhooks)
    activity.record(
        who,
        "unsubscribe",
        job_id=record.job_id,
        source=source,
        detail=", ".join([*emails, *webhooks]),
    )
    return record


def _unsubscribe(job_id: str, emails: Iterable[str], webhooks: Iterable[str] = ()) -> Record:
    from prefect.client.orchestration import get_client

    from workspaces_jobs.server import ensure_api

    job_id = canonical_job_id(job_id)
    addresses = [e.strip() for e in emails if e.strip()]
    urls = [u.strip() for u in webhooks if u.strip()]
    if not addresses and not urls:
        raise NotifyError("no email address given: pass --email ADDRESS to remove")
    ensure_api()
    with get_client(sync_client=True) as client:
        record = read_record(client, job_id)
        have = {h.url for h in record.webhooks}
        missing = [e for e in addresses if record.find(e) is None]
        missing += [u for u in urls if u not in have]
        if missing:
            raise NotifyError(
                f"{', '.join(missing)} is not subscribed to job {job_id}: "
                f"see `wsjobs notify --list {job_id}`"
            )
        if addresses:
            record = remove_subscribers(client, job_id, addresses)
        if urls:
            record = remove_webhooks(client, job_id, urls)
        return record


def read_subscriptions(job_id: str) -> Record:
    """The job's subscribers and their delivery state (empty if nobody subscribed)."""
    from prefect.client.orchestration import get_client

    from workspaces_jobs.server import ensure_api

    job_id = canonical_job_id(job_id)
    ensure_api()
    with get_client(sync_client=True) as client:
        return read_record(client, job_id)


def read_subscribers_light(job_id: str) -> list[dict[str, Any]]:
    """The job's email subscribers as ``wsjobs show --json`` lists them, read with httpx
    alone (:mod:`workspaces_jobs.gateway`: a read command imports no Prefect)."""
    import json

    from workspaces_jobs.errors import NotFound
    from workspaces_jobs.gateway import Api

    with Api() as api:
        try:
            data = api.call("GET", f"/variables/name/{variable_name(job_id)}")
        except NotFound:
            data = None
    value = data.get("value") if isinstance(data, dict) else None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    subs = Record.from_value(job_id, value).to_value()["subscribers"]
    assert isinstance(subs, list)
    return subs
