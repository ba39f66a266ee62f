"""Deliveries beyond a job's email subscribers: rule notices and webhooks.

For a job in a final status this sends, each exactly once per job and episode (its final
status, and the recovery after inactivity if any):

* to every target of every active rule the job matches (:mod:`.rules`): an email that
  names the rule, or a signed webhook whose body names it;
* to every webhook subscribed to the job itself (``wsjobs notify JOB --webhook URL``).

Exactly once across processes: each (job, rule, target, episode) is claimed the way a
subscriber's email is (:mod:`.claims`), with the prefixes ``wsjobs-ruleclaim-`` and
``wsjobs-hookclaim-``. The claim variables are also the **delivery log**: who delivered,
when, how many attempts, the last error (``wsjobs notify --log``). Their state is not
copied into a record, so retrying from outside (``deliver_owed``) looks at jobs that ended
within ``WSJOBS_NOTIFY_LOOKBACK`` seconds only — it cannot keep re-reading every job ever
notified.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workspaces_jobs.notify import claims
from workspaces_jobs.notify.outcome import NOT_CONFIGURED, RECOVERED_EPISODE, Outcome
from workspaces_jobs.notify.rules import RULE_CLAIM_PREFIX, Rule, list_rules, matching_rules

#: Claims of webhooks subscribed to one job.
HOOK_CLAIM_PREFIX = "wsjobs-hookclaim-"
PREFIXES = (claims.CLAIM_PREFIX, RULE_CLAIM_PREFIX, HOOK_CLAIM_PREFIX)


@dataclass(frozen=True)
class Target:
    kind: str  # email | webhook
    address: str  # the email address or the URL
    rule: Rule | None = None  # None: subscribed to the job itself
    subscribed_by: str = ""

    @property
    def claim_key(self) -> str:
        if self.rule is None:
            return self.address
        return f"{self.rule.name}\n{self.kind}:{self.address}"

    @property
    def prefix(self) -> str:
        return RULE_CLAIM_PREFIX if self.rule is not None else HOOK_CLAIM_PREFIX


def targets_for(job: Any, record: Any, rules: Sequence[Rule]) -> list[Target]:
    """Rule targets the job matches, then the job's own webhooks (emails are the record's)."""
    out = [
        Target(kind, address, rule, rule.created_by)
        for rule in matching_rules(rules, job)
        for kind, address in rule.targets()
    ]
    out += [Target("webhook", h.url, None, h.subscribed_by) for h in record.webhooks]
    return out


def deliver_targets(
    client: Any,
    job: Any,
    targets: Sequence[Target],
    *,
    via: str,
    settings: Any,
    log: logging.Logger | logging.LoggerAdapter[Any],
    tails: Any,
    link: str,
) -> list[Any]:
    """Deliver to each target under its claim; one :class:`~.outcome.Outcome` per target."""
    episode = RECOVERED_EPISODE if job.recovered else ""
    return [_deliver_one(client, job, t, episode, via, settings, log, tails, link) for t in targets]


def _deliver_one(
    client: Any,
    job: Any,
    target: Target,
    episode: str,
    via: str,
    settings: Any,
    log: logging.Logger | logging.LoggerAdapter[Any],
    tails: Any,
    link: str,
) -> Any:
    rule = target.rule.name if target.rule else None

    def outcome(result: str, attempts: int = 0, error: str | None = None) -> Outcome:
        return Outcome(job.id, target.address, result, attempts, error, target.kind, rule)  # type: ignore[arg-type]

    # Check the means first: a delivery that cannot be made claims nothing (it waits).
    try:
        sender = _sender(target, settings)
    except Exception as exc:
        problem = str(exc)
        log.warning(f"Notify: {target.kind} to {target.address} for job {job.id} waits: {problem}")
        return outcome("waiting", 0, problem)
    got = claims.try_claim(
        client,
        job.id,
        target.claim_key,
        via=via,
        stale_after=settings.notify_claim_stale,
        max_attempts=settings.notify_max_attempts,
        episode=episode,
        prefix=target.prefix,
        extra={
            "kind": target.kind,
            "target": target.address,
            "rule": rule,
            "status": job.status,
        },
    )
    if got.kind == "sent":
        return outcome("already sent", got.attempts)
    if got.kind in ("busy", "exhausted") or got.claim is None:
        return outcome(got.kind, got.attempts)
    claim = got.claim
    remaining = settings.notify_max_attempts - claim.prior_attempts
    retries = max(1, min(settings.notify_retries, remaining))
    try:
        tries, error = sender(job, target, claim.name, episode, retries, link, tails)
    except Exception as exc:  # a bug, not an outage: counted, so it ends after max attempts
        log.exception(f"Notify: could not build the {target.kind} for job {job.id}")
        tries, error = 1, f"{type(exc).__name__}: {exc}"[:200]
    claims.finish(client, claim, sent=error is None, attempts=tries, error=error)
    total = claim.prior_attempts + tries
    why = f" (rule {rule})" if rule else ""
    if error is None:
        log.info(f"Notify: {target.kind} to {target.address}{why} about job {job.id} delivered")
        return outcome("sent", total)
    log.warning(
        f"Notify: {target.kind} to {target.address}{why} failed after {total} attempt(s): "
        f"{error}; `wsjobs notify --deliver` (or the watchdog) retries"
    )
    return outcome("failed", total, error)


def _sender(target: Target, settings: Any) -> Any:
    """A function that delivers to ``target``; raises when the means are not configured."""
    if target.kind == "webhook":
        from workspaces_jobs.notify.webhooks import NO_SECRET, WebhookSettings, load_secret

        hook_settings = WebhookSettings()
        secret = load_secret(hook_settings)
        if secret is None:
            raise RuntimeError(NO_SECRET)

        def post(
            job: Any, t: Target, delivery: str, episode: str, retries: int, link: str, tails: Any
        ) -> tuple[int, str | None]:
            from workspaces_jobs.notify import webhooks

            data = webhooks.payload(
                job, link=link, rule=t.rule.name if t.rule else None, episode=episode
            )
            return webhooks.post_with_retries(
                t.address,
                webhooks.body_of(data),
                secret=secret,
                delivery=delivery,
                event=data["event"],
                retries=retries,
                backoff=settings.notify_backoff,
                timeout=hook_settings.webhook_timeout,
            )

        return post
    from workspaces_jobs.notify.smtp import load_config, send_with_retries

    config = load_config(settings)
    if config is None:
        raise RuntimeError(NOT_CONFIGURED)

    def mail(
        job: Any, t: Target, delivery: str, episode: str, retries: int, link: str, tails: Any
    ) -> tuple[int, str | None]:
        from workspaces_jobs.notify.render import build_message, render
        from workspaces_jobs.notify.subscriptions import Subscriber

        who = Subscriber(email=t.address, subscribed_by=t.subscribed_by)
        rendered = render(job, link=link, tails=tails, subscriber=who, rule=t.rule)
        message = build_message(rendered, sender=config.sender, to=t.address, job_id=job.id)
        return send_with_retries(config, message, retries=retries, backoff=settings.notify_backoff)

    return mail


def read_rules_quietly(client: Any, log: logging.Logger | logging.LoggerAdapter[Any]) -> list[Rule]:
    """The rules, or none if they cannot be read (a notice is never worth a job's outcome)."""
    try:
        return list_rules(client)
    except Exception:
        log.exception("Notify: could not read the notification rules")
        return []


def delivery_log(client: Any, job_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Claim variables (newest first): every delivery round, by whom, how it ended."""
    rows: list[dict[str, Any]] = []
    for prefix in PREFIXES:
        like = f"{prefix}{job_id.lower()}" if job_id else prefix
        response = client.request(
            "POST",
            "/variables/filter",
            json={"variables": {"name": {"like_": like}}, "sort": "CREATED_DESC", "limit": limit},
        )
        for item in response.json():
            if not item["name"].startswith(prefix):
                continue
            value = item.get("value") if isinstance(item.get("value"), dict) else {}
            rows.append(
                {
                    "claim": item["name"],
                    "job_id": value.get("job_id"),
                    "kind": value.get("kind") or "email",
                    "target": value.get("target") or value.get("email"),
                    "rule": value.get("rule"),
                    "episode": value.get("episode") or "final",
                    "status": value.get("status"),
                    "state": value.get("state"),
                    "round": value.get("round"),
                    "attempts": value.get("attempts"),
                    "error": value.get("error"),
                    "by": value.get("by"),
                    "claimed_at": value.get("claimed_at"),
                    "finished_at": value.get("finished_at"),
                }
            )
    rows.sort(key=lambda r: str(r.get("claimed_at") or ""), reverse=True)
    return rows[:limit]
