"""Where mail goes: SMTP settings (a Prefect block or ``WSJOBS_SMTP_*``), one send, retries.

The server can be described two ways, so a team that already keeps its mail server in
Prefect does not configure it twice:

* ``WSJOBS_SMTP_BLOCK=name`` — a saved prefect-email ``EmailServerCredentials`` block
  (host, port, SSL/STARTTLS/INSECURE, user, password as a ``SecretStr``), editable in the
  Prefect UI and readable by every worker through the API;
* ``WSJOBS_SMTP_HOST`` (+ ``_PORT``, ``_USER``, ``_PASSWORD``, ``_STARTTLS``/``_SSL``).

We open the connection ourselves rather than through the block's ``get_server()`` because
that call has no timeout: a server that accepts TCP and then hangs would hold the job's
process forever. The password is a ``SecretStr`` end to end; :func:`redact` scrubs it from
any error text before that text is logged or stored.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workspaces_jobs.errors import BadInput

Security = Literal["ssl", "starttls", "plain"]
_DEFAULT_PORTS: dict[str, int] = {"ssl": 465, "starttls": 587, "plain": 25}
#: Longest error text kept per subscriber (the record lives in a 5,000-character variable).
MAX_ERROR_CHARS = 200


class NotifyError(BadInput):
    """A notification request that cannot be honoured; the message says how to fix it."""


class NotifySettings(BaseSettings):
    """``WSJOBS_SMTP_*`` (the server) and ``WSJOBS_NOTIFY_*`` (the delivery policy)."""

    model_config = SettingsConfigDict(env_prefix="WSJOBS_", extra="ignore")

    smtp_block: str | None = Field(
        default=None, description="Name of a prefect-email EmailServerCredentials block to use."
    )
    smtp_host: str | None = Field(default=None, description="SMTP server host name.")
    smtp_port: int | None = Field(
        default=None, description="SMTP port; default 465 with SSL, 587 with STARTTLS, else 25."
    )
    smtp_user: str | None = Field(default=None, description="SMTP login user, if any.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP login password.")
    smtp_starttls: bool = Field(default=False, description="Upgrade the connection (STARTTLS).")
    smtp_ssl: bool = Field(default=False, description="Connect with TLS from the start (SMTPS).")
    smtp_verify: bool = Field(default=True, description="Verify the server's TLS certificate.")
    smtp_from: str | None = Field(
        default=None, description="Sender address; default the SMTP user, else wsjobs@HOST."
    )
    smtp_timeout: float = Field(default=30.0, gt=0, description="Seconds per SMTP operation.")
    notify_retries: int = Field(
        default=3, ge=1, description="SMTP attempts per delivery round (with backoff)."
    )
    notify_backoff: float = Field(
        default=2.0, ge=0, description="Seconds before the 2nd attempt of a round; doubles."
    )
    notify_max_attempts: int = Field(
        default=9, ge=1, description="Attempts per subscriber over all rounds before giving up."
    )
    notify_claim_stale: float = Field(
        default=600.0,
        gt=0,
        description="Seconds after which an unfinished delivery claim may be taken over.",
    )
    notify_log_lines: int = Field(
        default=10, ge=0, description="Last log lines shown per failed step in the email."
    )
    notify_lookback: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "Seconds back `wsjobs notify --deliver` and the watchdog look for ended jobs owed a "
            "rule notice or a webhook."
        ),
    )

    @model_validator(mode="after")
    def _one_tls_mode(self) -> NotifySettings:
        if self.smtp_ssl and self.smtp_starttls:
            raise ValueError(
                "WSJOBS_SMTP_SSL and WSJOBS_SMTP_STARTTLS are both set: choose one "
                "(SSL for port 465, STARTTLS for 587)"
            )
        return self


@dataclass(frozen=True)
class SmtpConfig:
    """Everything needed to open one SMTP session; ``repr`` never shows the password."""

    host: str
    port: int
    security: Security
    sender: str
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    timeout: float = 30.0
    verify: bool = True
    source: str = "env"

    def describe(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{self.security}://{user}{self.host}:{self.port} ({self.source})"


def _sender(settings: NotifySettings, username: str | None) -> str:
    if settings.smtp_from:
        return settings.smtp_from
    if username and "@" in username:
        return username
    return f"wsjobs@{socket.getfqdn() or 'localhost'}"


def load_config(settings: NotifySettings | None = None) -> SmtpConfig | None:
    """The SMTP server to use, or None when none is configured (mail then waits)."""
    settings = settings or NotifySettings()
    if settings.smtp_block:
        return _from_block(settings)
    if not settings.smtp_host:
        return None
    security: Security = (
        "ssl" if settings.smtp_ssl else "starttls" if settings.smtp_starttls else "plain"
    )
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port or _DEFAULT_PORTS[security],
        security=security,
        sender=_sender(settings, settings.smtp_user),
        username=settings.smtp_user or None,
        password=settings.smtp_password,
        timeout=settings.smtp_timeout,
        verify=settings.smtp_verify,
    )


def _from_block(settings: NotifySettings) -> SmtpConfig:
    from prefect_email import EmailServerCredentials
    from prefect_email.credentials import SMTPServer, SMTPType

    name = settings.smtp_block or ""
    try:
        block = EmailServerCredentials.load(name)
    except ValueError as exc:
        raise NotifyError(
            f"no EmailServerCredentials block named {name!r}: create it in the Prefect UI "
            "(Blocks) or unset WSJOBS_SMTP_BLOCK"
        ) from exc
    server = block.smtp_server
    host = server.value if isinstance(server, SMTPServer) else str(server)
    kind = block.smtp_type if isinstance(block.smtp_type, SMTPType) else SMTPType[block.smtp_type]
    modes: dict[str, Security] = {"SSL": "ssl", "STARTTLS": "starttls", "INSECURE": "plain"}
    security = modes[kind.name]
    password = block.password if block.password.get_secret_value() else None
    return SmtpConfig(
        host=host,
        port=block.smtp_port or kind.value,
        security=security,
        sender=_sender(settings, block.username),
        username=block.username or None,
        password=password,
        timeout=settings.smtp_timeout,
        verify=block.verify is not False,
        source=f"block {name}",
    )


def redact(text: str, config: SmtpConfig | None) -> str:
    """Error text safe to log and store: no password, one line, bounded length."""
    secret = config.password.get_secret_value() if config and config.password else ""
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def send_once(config: SmtpConfig, message: EmailMessage) -> None:
    """One SMTP session that delivers ``message``; raises on any failure."""
    context = ssl.create_default_context()
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    server: smtplib.SMTP
    if config.security == "ssl":
        server = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
    else:
        server = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    with server:
        if config.security == "starttls":
            server.starttls(context=context)
        if config.username and config.password:
            server.login(config.username, config.password.get_secret_value())
        server.send_message(message)


def _permanent(exc: Exception) -> bool:
    """5xx answers (bad recipient, message refused) do not heal by retrying at once."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    code = getattr(exc, "smtp_code", None)
    return (
        isinstance(code, int)
        and code >= 500
        and not isinstance(exc, smtplib.SMTPAuthenticationError)
    )


def send_with_retries(
    config: SmtpConfig,
    message: EmailMessage,
    *,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, str | None]:
    """Try up to ``retries`` times, waiting ``backoff``, 2×, 4×… between tries.

    Returns (attempts made, None) on success or (attempts made, redacted last error).
    """
    error: str | None = None
    for attempt in range(1, retries + 1):
        try:
            send_once(config, message)
            return attempt, None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            error = redact(f"{type(exc).__name__}: {exc}", config)
            if _permanent(exc) or attempt == retries:
                return attempt, error
            sleep(backoff * 2 ** (attempt - 1))
    return retries, error
