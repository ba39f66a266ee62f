"""Webhooks: a job's final status POSTed as signed JSON to an HTTP endpoint.

A rule or a job subscription can target a URL instead of (or besides) an address, to
feed chat and ticketing systems. The body is JSON (:func:`payload`); the header
``X-Wsjobs-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes with the
shared secret, so the receiver can check that the notice came from us and was not
changed (:func:`verify` is what a receiver runs). ``X-Wsjobs-Delivery`` carries the
delivery's claim name: the same value on every retry of one delivery.

The secret comes from ``WSJOBS_WEBHOOK_SECRET`` or, better for several workers, a Prefect
``Secret`` block named by ``WSJOBS_WEBHOOK_SECRET_BLOCK``. It is held as a ``SecretStr``,
never logged, never stored in a record or a claim; without one, webhook deliveries wait
(recorded, retried by ``wsjobs notify --deliver`` and the watchdog) rather than go
unsigned. Exactly-once across processes uses the email claims (:mod:`.claims`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from workspaces_jobs.notify.smtp import MAX_ERROR_CHARS, NotifyError

SIGNATURE_HEADER = "X-Wsjobs-Signature"
DELIVERY_HEADER = "X-Wsjobs-Delivery"
EVENT_HEADER = "X-Wsjobs-Event"
NO_SECRET = (
    "no webhook secret configured: set WSJOBS_WEBHOOK_SECRET or WSJOBS_WEBHOOK_SECRET_BLOCK "
    "(a Prefect Secret block)"
)


class WebhookSettings(BaseSettings):
    """``WSJOBS_WEBHOOK_*``: the signing secret and the HTTP policy."""

    model_config = SettingsConfigDict(env_prefix="WSJOBS_", extra="ignore")

    webhook_secret: SecretStr | None = Field(
        default=None, description="Shared secret that signs webhook bodies (HMAC-SHA256)."
    )
    webhook_secret_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the secret."
    )
    webhook_timeout: float = Field(default=10.0, gt=0, description="Seconds per HTTP attempt.")


def check_url(url: str) -> str:
    """An http(s) URL with a host, or :class:`NotifyError` saying what is wrong."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotifyError(f"invalid webhook URL {url!r}: use http(s)://host[:port]/path")
    return text


def load_secret(settings: WebhookSettings | None = None) -> SecretStr | None:
    """The signing secret: the environment first, else the named Prefect Secret block."""
    settings = settings or WebhookSettings()
    if settings.webhook_secret is not None and settings.webhook_secret.get_secret_value():
        return settings.webhook_secret
    if settings.webhook_secret_block:
        from prefect.blocks.system import Secret

        try:
            block: Any = Secret.load(settings.webhook_secret_block)
        except ValueError as exc:
            raise NotifyError(
                f"no Prefect Secret block named {settings.webhook_secret_block!r} "
                "(WSJOBS_WEBHOOK_SECRET_BLOCK): create it, or set WSJOBS_WEBHOOK_SECRET"
            ) from exc
        value = block.get()
        return SecretStr(str(value)) if value else None
    return None


def sign(secret: SecretStr, body: bytes) -> str:
    digest = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver runs: does ``header`` sign ``body`` with ``secret``? (constant time)."""
    if not header:
        return False
    return hmac.compare_digest(sign(SecretStr(secret), body), header)


def payload(job: Any, *, link: str, rule: str | None, episode: str) -> dict[str, Any]:
    """The JSON a receiver gets: what the issue asks for, plus the event name and episode."""
    from workspaces_jobs.status import JobStatus

    failed = [d.device for d in job.devices if d.status not in ("Completed", "Pending")]
    return {
        "event": f"workspaces.job.{JobStatus(job.status).slug}",
        "job_id": job.id,
        "action": job.action,
        "status": job.status,
        "reason": job.reason,
        "owner": job.owner,
        "info": job.info,
        "devices_ok": sum(1 for d in job.devices if d.status == "Completed"),
        "devices_failed": len(failed),
        "failed_devices": failed,
        "recovered": bool(job.recovered),
        "episode": episode or "final",
        "rule": rule,
        "ended": job.ended.isoformat() if job.ended else None,
        "link": link,
    }


def body_of(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def post_with_retries(
    url: str,
    body: bytes,
    *,
    secret: SecretStr,
    delivery: str,
    event: str,
    retries: int,
    backoff: float,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, str | None]:
    """POST up to ``retries`` times (backoff, 2×, 4×…); (attempts, None) on a 2xx reply.

    A 4xx other than 408/429 is permanent (the receiver refuses this body: retrying the
    same bytes cannot help); connection errors, timeouts and 5xx are retried.
    """
    import httpx

    headers = {
        "Content-Type": "application/json",
        "User-Agent": "wsjobs-webhook",
        SIGNATURE_HEADER: sign(secret, body),
        DELIVERY_HEADER: delivery,
        EVENT_HEADER: event,
    }
    error: str | None = None
    for attempt in range(1, retries + 1):
        permanent = False
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
                response = client.post(url, content=body, headers=headers)
            if 200 <= response.status_code < 300:
                return attempt, None
            error = f"HTTP {response.status_code} from {url}"
            permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        if permanent or attempt == retries:
            return attempt, error
        sleep(backoff * 2 ** (attempt - 1))
    return retries, error
