"""What one delivery did, shared by subscriber emails (:mod:`.deliver`) and rule notices
(:mod:`.alerts`) without either importing the other for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Result = Literal["sent", "failed", "already sent", "busy", "exhausted", "waiting", "removed"]
NOT_CONFIGURED = "no SMTP server configured: set WSJOBS_SMTP_HOST or WSJOBS_SMTP_BLOCK"
#: The delivery episode of a job's final status reached after Error (inactivity).
RECOVERED_EPISODE = "recovered"


@dataclass(frozen=True)
class Outcome:
    """What happened to one subscriber in this call."""

    job_id: str
    email: str  # the target: an address, or a webhook URL (``kind``)
    result: Result
    attempts: int = 0
    error: str | None = None
    kind: str = "email"  # email | webhook
    rule: str | None = None  # the rule that matched, for rule notices

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
