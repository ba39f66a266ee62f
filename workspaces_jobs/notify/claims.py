"""Exactly one sender per subscriber: atomic claims made of Prefect Variables.

Prefect variables have no compare-and-swap, but creating one is atomic: a second
``create_variable`` with the same name fails with 409 (``ObjectAlreadyExists``). A
delivery *round* for (job, address) is the variable
``wsjobs-mailclaim-<job id>-<hash of address>-<n>``; whoever creates round ``n`` is the
only process allowed to email that address in that round. Its value moves from
``sending`` to ``sent`` (for ever: nobody creates a later round) or ``failed`` (the next
round may be claimed). So the in-process hook, ``wsjobs notify --deliver`` and the
watchdog can all run at once and the subscriber still gets one email.

A round left ``sending`` by a process that died is taken over — by creating the next
round, atomically again — once it is older than ``WSJOBS_NOTIFY_CLAIM_STALE`` (600 s,
far longer than one round of SMTP tries). The one case that can still send twice is a
process killed after the server accepted the message and before it wrote ``sent``.

The prefix is deliberately not ``wsjobs-notify-``, which names the subscription records.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

CLAIM_PREFIX = "wsjobs-mailclaim-"
#: Upper bound on rounds scanned; each round is at least one attempt.
MAX_ROUNDS = 100


def claim_name(
    job_id: str, email: str, round_no: int, *, episode: str = "", prefix: str = CLAIM_PREFIX
) -> str:
    """``<prefix><job>-<hash of target>-[<episode>-]<n>``.

    ``episode`` is empty for a job's first final status and ``recovered`` for the one it
    reaches after recovering from inactivity: each episode is delivered once. ``prefix``
    separates the kinds of delivery (job emails, rule notices, webhooks).
    """
    digest = hashlib.sha256(email.casefold().encode()).hexdigest()[:16]
    middle = f"{episode}-" if episode else ""
    return f"{prefix}{job_id.lower()}-{digest}-{middle}{round_no}"


def whoami(via: str) -> str:
    return f"{via}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    """A delivery round: one this process owns (it may send), or a finished one it found."""

    name: str
    round_no: int
    value: dict[str, Any]

    @property
    def prior_attempts(self) -> int:
        """SMTP attempts made in earlier rounds: the claims, not the record, count them."""
        return int(self.value.get("prior_attempts") or 0)


@dataclass(frozen=True)
class ClaimResult:
    """``owned``: send now; ``sent``: already delivered; ``busy``: another process is on
    it; ``exhausted``: earlier rounds used up the attempts."""

    kind: Literal["owned", "sent", "busy", "exhausted"]
    claim: Claim | None = None
    attempts: int = 0


def _stale(value: dict[str, Any], stale_after: float) -> bool:
    try:
        claimed = datetime.fromisoformat(str(value.get("claimed_at")))
    except ValueError:
        return True
    return datetime.now(UTC) - claimed > timedelta(seconds=stale_after)


def try_claim(
    client: Any,
    job_id: str,
    email: str,
    *,
    via: str,
    stale_after: float,
    max_attempts: int,
    episode: str = "",
    prefix: str = CLAIM_PREFIX,
    extra: dict[str, Any] | None = None,
) -> ClaimResult:
    """Own the next delivery round for (job, target, episode) unless it is sent, busy or
    exhausted. ``email`` is the target (an address, or a webhook URL); ``extra`` goes into
    the claim's value (the delivery log: rule name, target kind, status sent)."""
    from prefect.client.schemas.actions import VariableCreate
    from prefect.exceptions import ObjectAlreadyExists

    prior = 0
    for round_no in range(1, MAX_ROUNDS + 1):
        name = claim_name(job_id, email, round_no, episode=episode, prefix=prefix)
        found = client.read_variable_by_name(name)
        if found is None:
            break
        value = found.value if isinstance(found.value, dict) else {}
        state = value.get("state")
        attempts = int(value.get("prior_attempts") or 0) + int(value.get("attempts") or 0)
        if state == "sent":
            return ClaimResult("sent", Claim(name, round_no, value), attempts)
        if state == "sending" and not _stale(value, stale_after):
            return ClaimResult("busy", attempts=prior)
        prior = max(prior, attempts)
    else:
        return ClaimResult("exhausted", attempts=prior)
    if prior >= max_attempts:
        return ClaimResult("exhausted", attempts=prior)
    value = {
        "job_id": job_id,
        "email": email,
        "round": round_no,
        "state": "sending",
        "token": uuid.uuid4().hex,
        "by": whoami(via),
        "claimed_at": datetime.now(UTC).isoformat(),
        "prior_attempts": prior,
        **({"episode": episode} if episode else {}),
        **(extra or {}),
    }
    try:
        client.create_variable(VariableCreate(name=name, value=value))
    except ObjectAlreadyExists:
        return ClaimResult("busy", attempts=prior)
    return ClaimResult("owned", Claim(name, round_no, value), prior)


def finish(client: Any, claim: Claim, *, sent: bool, attempts: int, error: str | None) -> Claim:
    """Close the round: ``sent`` ends all rounds for this address, ``failed`` frees the next."""
    from prefect.client.schemas.actions import VariableUpdate

    value = {
        **claim.value,
        "state": "sent" if sent else "failed",
        "attempts": attempts,
        "error": error,
        "finished_at": datetime.now(UTC).isoformat(),
    }
    client.update_variable(VariableUpdate(name=claim.name, value=value))
    return Claim(claim.name, claim.round_no, value)
