"""Notification rules: "tell A about every job that matches filter F when it ends".

``wsjobs notify --filter NAME --email A [--webhook URL]`` subscribes to a saved or
predefined filter. Every job that matches it when it reaches a final status is notified
once per target (the email says which rule matched; the webhook body names it).

**Where rules live: Prefect Variables** (``wsjobs-rule-<name>``), like job subscriptions,
not the history file. The check runs where the job ends — in the job's own process (its
final-status hook), in ``wsjobs cancel``, in the watchdog — on any host, and those
processes talk to the Prefect API only: they must never open the DuckDB history (one
writer per file; a job host may not even have it). A rule therefore carries a *copy* of
its filter's fields, taken when it is created: editing or deleting the saved filter later
does not change the rule (subscribe again to refresh it; ``--rules`` shows the copy).

**Matching** is :func:`matches`, the Python twin of the SQL ``build_where`` for one job
(table-tested against it): status, owner (``@me`` = the rule's creator), action, device,
``--search`` over the same columns, age/since/until windows on ``created`` at the time
the job ends, ``started_over``, ``recovered``. ``--search-logs`` is refused in a rule
(the job's log lines are not read at that moment).
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from typing import Any

from workspaces_jobs.notify.smtp import NotifyError
from workspaces_jobs.notify.subscriptions import normalize_emails, now_iso

RULE_PREFIX = "wsjobs-rule-"
#: Claims of rule deliveries: ``wsjobs-ruleclaim-<job>-<hash of rule+target>-<n>``.
RULE_CLAIM_PREFIX = "wsjobs-ruleclaim-"
_RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class Rule:
    name: str
    filter: str
    spec: dict[str, Any]  # the filter's fields when the rule was made (FilterSpec JSON)
    description: str
    emails: tuple[str, ...] = ()
    webhooks: tuple[str, ...] = ()
    paused: bool = False
    created_at: str = field(default_factory=now_iso)
    created_by: str = ""

    def to_value(self) -> dict[str, Any]:
        value = asdict(self)
        value["emails"], value["webhooks"] = list(self.emails), list(self.webhooks)
        return value

    @classmethod
    def from_value(cls, value: Any) -> Rule | None:
        if not isinstance(value, dict) or not value.get("name"):
            return None
        return cls(
            name=str(value["name"]),
            filter=str(value.get("filter") or ""),
            spec=dict(value.get("spec") or {}),
            description=str(value.get("description") or ""),
            emails=tuple(value.get("emails") or ()),
            webhooks=tuple(value.get("webhooks") or ()),
            paused=bool(value.get("paused")),
            created_at=str(value.get("created_at") or ""),
            created_by=str(value.get("created_by") or ""),
        )

    def targets(self) -> list[tuple[str, str]]:
        """``(kind, target)`` pairs: ``("email", address)`` and ``("webhook", url)``."""
        return [("email", e) for e in self.emails] + [("webhook", u) for u in self.webhooks]


def variable_name(rule: str) -> str:
    return f"{RULE_PREFIX}{rule}"


def check_rule_name(name: str) -> str:
    if not _RULE_NAME.fullmatch(name):
        raise NotifyError(
            f"bad rule name {name!r}: use lower-case letters, digits, '-' or '_' (max 64)"
        )
    return name


# --- matching (pure) -----------------------------------------------------------------------


def _search_texts(job: Any) -> list[str]:
    """The job's text columns ``--search`` looks at (``fields.SEARCH_COLUMNS``)."""
    import json

    values = [
        job.id,
        job.name,
        job.action,
        job.info,
        job.owner,
        job.status,
        job.reason,
        job.prefect_state_type,
        job.prefect_state_name,
        job.state_message,
        job.deployment_id,
        json.dumps(job.parameters, default=str, sort_keys=True),
        ",".join(job.tags),
        job.canceled_by,
        job.rerun_of,
    ]
    return [str(v) for v in values if v is not None]


def matches(
    spec: Any, job: Any, *, now: datetime, tz: tzinfo, creator: str, default_age: str = "all"
) -> bool:
    """Does ``job`` (a JobFact in a final status) match ``spec`` (a FilterSpec) at ``now``?

    Same meaning as the list's WHERE clause: lists are OR, fields are AND; windows are on
    ``created`` in ``tz`` (the filter's own ``tz`` when it has one); a filter without an
    age and without since/until takes ``default_age`` (all: a rule has no view window).
    """
    from workspaces_jobs.reporting import windows

    zone = windows.resolve_zone(spec.tz) if spec.tz else tz
    created = job.created
    age = spec.age or (None if (spec.since or spec.until) else default_age)
    if age and age != "all":
        win = windows.age_window(age, tz=zone, now=now)
        if created is None or not (win.start <= created < win.end):  # type: ignore[operator]
            return False
    if spec.since and (created is None or created < windows.parse_instant(spec.since, tz=zone)):
        return False
    if spec.until and (
        created is None or created >= windows.parse_instant(spec.until, tz=zone, end=True)
    ):
        return False
    if spec.statuses and job.status not in spec.statuses:
        return False
    if spec.owners:
        owners = {creator if o == "@me" else o for o in spec.owners}
        if job.owner not in owners:
            return False
    if spec.actions and job.action not in spec.actions:
        return False
    if spec.devices and not {d.device for d in job.devices} & set(spec.devices):
        return False
    if spec.started_over:
        limit = now - windows.parse_duration(spec.started_over)
        if job.started is None or not job.started < limit:
            return False
    if spec.search is not None:
        needle = spec.search.casefold()
        if not any(needle in text.casefold() for text in _search_texts(job)):
            return False
    if spec.recovered is not None and (spec.recovered == "yes") != bool(job.recovered):
        return False
    return True


# --- storage (Prefect Variables) -----------------------------------------------------------


def resolve_filter(name: str) -> tuple[Any, str]:
    """A predefined or saved filter's spec and its words; saved ones come from the history."""
    from workspaces_jobs.reporting.filters import PREDEFINED
    from workspaces_jobs.reporting.saved import _describe

    if name in PREDEFINED:
        spec = PREDEFINED[name]
    else:
        from workspaces_jobs.reporting.saved import get_filter
        from workspaces_jobs.reporting.store import open_store

        try:
            with open_store(read_only=True) as con:
                spec = get_filter(con, name)
        except (LookupError, FileNotFoundError) as exc:
            raise NotifyError(
                f"no filter named {name!r}: see `wsjobs filters` (predefined ones: "
                f"{', '.join(PREDEFINED)})"
            ) from exc
    return spec, _describe(spec)


def read_rule(client: Any, name: str) -> Rule | None:
    variable = client.read_variable_by_name(variable_name(name))
    return Rule.from_value(variable.value) if variable else None


def list_rules(client: Any) -> list[Rule]:
    from workspaces_jobs.apipages import iter_variables

    rules = (Rule.from_value(item.get("value")) for item in iter_variables(client, RULE_PREFIX))
    return [rule for rule in rules if rule is not None]


def _write(client: Any, rule: Rule, *, exists: bool) -> Rule:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    from workspaces_jobs.notify.subscriptions import MAX_RECORD_CHARS, _json

    value = rule.to_value()
    if len(_json(value)) > MAX_RECORD_CHARS:
        raise NotifyError(
            f"rule {rule.name!r} has too many targets for one Prefect variable: "
            "use a mailing-list address, or a second rule"
        )
    if exists:
        client.update_variable(VariableUpdate(name=variable_name(rule.name), value=value))
    else:
        client.create_variable(VariableCreate(name=variable_name(rule.name), value=value))
    return rule


def add_rule(
    filter_name: str,
    *,
    emails: Iterable[str] = (),
    webhooks: Iterable[str] = (),
    name: str | None = None,
    by: str | None = None,
    resolved: tuple[Any, str] | None = None,
) -> Rule:
    """Create the rule (named after the filter unless ``name``) or add targets to it.

    ``resolved``: the filter's (spec, description) when the caller has read it already
    (the web view, which holds the history file open itself).
    """
    from prefect.client.orchestration import get_client

    from workspaces_jobs.notify.webhooks import check_url
    from workspaces_jobs.server import ensure_api

    emails, webhooks = list(emails), [check_url(u) for u in webhooks]
    if not emails and not webhooks:
        raise NotifyError("no target given: pass --email ADDRESS and/or --webhook URL")
    addresses = normalize_emails(emails) if emails else []
    rule_name = check_rule_name(name or filter_name)
    spec, description = resolved or resolve_filter(filter_name)
    if spec.search_logs is not None:
        raise NotifyError(
            f"filter {filter_name!r} searches the logs (--search-logs), which a rule cannot "
            "check when a job ends: save a filter without it for the rule"
        )
    ensure_api()
    with get_client(sync_client=True) as client:
        current = read_rule(client, rule_name)
        if current is not None and current.filter != filter_name:
            raise NotifyError(
                f"rule {rule_name!r} already follows filter {current.filter!r}: "
                "pick another --rule NAME"
            )
        base = current or Rule(
            name=rule_name,
            filter=filter_name,
            spec=spec.to_json(),
            description=description,
            created_by=by or getpass.getuser(),
        )
        known = {e.casefold() for e in base.emails}
        new = replace(
            base,
            spec=spec.to_json(),
            description=description,
            emails=base.emails + tuple(a for a in addresses if a.casefold() not in known),
            webhooks=base.webhooks + tuple(u for u in webhooks if u not in base.webhooks),
        )
        made = _write(client, new, exists=current is not None)
    targets = ", ".join([*addresses, *webhooks])
    _recorded("rule-add", made.name, f"filter {filter_name}: {targets}")
    return made


def _recorded(action: str, rule: str, detail: str = "") -> None:
    """The change's activity row, as the request's or the CLI's actor (the rule's own
    ``created_by`` may be a free-text ``--by``; the row's ``who`` is verified)."""
    from workspaces_jobs import activity

    who, source = activity.actor()
    activity.record(
        who, action, source=source, detail=f"rule {rule}" + (f": {detail}" if detail else "")
    )


def set_paused(name: str, paused: bool) -> Rule:
    from prefect.client.orchestration import get_client

    from workspaces_jobs.server import ensure_api

    ensure_api()
    with get_client(sync_client=True) as client:
        rule = _existing(client, name)
        changed = _write(client, replace(rule, paused=paused), exists=True)
    _recorded("rule-pause" if paused else "rule-resume", name)
    return changed


def remove_rule(name: str) -> Rule:
    from prefect.client.orchestration import get_client

    from workspaces_jobs.server import ensure_api

    ensure_api()
    with get_client(sync_client=True) as client:
        rule = _existing(client, name)
        client.delete_variable_by_name(variable_name(name))
    _recorded("rule-remove", name, f"filter {rule.filter}")
    return rule


def read_rules() -> list[Rule]:
    from prefect.client.orchestration import get_client

    from workspaces_jobs.server import ensure_api

    ensure_api()
    with get_client(sync_client=True) as client:
        return list_rules(client)


def _existing(client: Any, name: str) -> Rule:
    rule = read_rule(client, name)
    if rule is None:
        known = ", ".join(r.name for r in list_rules(client)) or "none yet"
        raise NotifyError(f"no rule named {name!r}: rules are {known} (`wsjobs notify --rules`)")
    return rule


def matching_rules(rules: Iterable[Rule], job: Any, *, now: datetime | None = None) -> list[Rule]:
    """The active rules ``job`` matches now (a rule whose copy no longer parses is skipped)."""
    from workspaces_jobs.reporting.filters import FilterSpec
    from workspaces_jobs.reporting.windows import resolve_zone, system_zone_name

    when = now or datetime.now(UTC)
    tz = resolve_zone(system_zone_name())
    out = []
    for rule in rules:
        if rule.paused:
            continue
        try:
            spec = FilterSpec.from_json(rule.spec)
        except ValueError:
            continue
        if matches(spec, job, now=when, tz=tz, creator=rule.created_by):
            out.append(rule)
    return out
