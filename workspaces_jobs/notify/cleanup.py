"""Notification records go with their jobs: remove the Prefect Variables of jobs that
Prefect no longer has (deleted, or removed by the server's ``db_vacuum`` retention).

The notifier keeps, per job, the subscription record ``wsjobs-notify-<job id>``, its lock
``wsjobs-notifylock-<job id>`` and the exactly-once claims
``wsjobs-mailclaim-<job id>-<hash>-<n>``. Prefect does not tie variables to flow runs,
so nothing else removes them. ``wsjobs prune`` calls :func:`remove_orphan_variables`;
the history keeps its own copy of who was notified (table ``notifications``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from workspaces_jobs.notify.claims import CLAIM_PREFIX
from workspaces_jobs.notify.subscriptions import LOCK_PREFIX, VARIABLE_PREFIX

PREFIXES = (VARIABLE_PREFIX, LOCK_PREFIX, CLAIM_PREFIX)
_ID = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:-|$)")
PAGE = 200


@dataclass(frozen=True)
class Orphan:
    name: str
    job_id: str


def job_of(name: str) -> str | None:
    """The job id in a notifier variable's name; None for any other variable."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            match = _ID.match(name[len(prefix) :])
            return match.group(1) if match else None
    return None


def _notifier_variables(client: Any) -> list[Orphan]:
    from workspaces_jobs.apipages import iter_variables

    found: dict[str, Orphan] = {}
    for var in iter_variables(client, "wsjobs-"):
        job = job_of(str(var.get("name", "")))
        if job is not None:
            found[var["name"]] = Orphan(var["name"], job)
    return list(found.values())


def _existing(client: Any, job_ids: Sequence[str]) -> set[str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    alive: set[str] = set()
    for start in range(0, len(job_ids), PAGE):
        chunk = [UUID(i) for i in job_ids[start : start + PAGE]]
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=PAGE
        )
        alive |= {str(r.id) for r in runs}
    return alive


def orphan_variables(client: Any) -> list[Orphan]:
    """The notifier's variables whose job Prefect no longer has (a sync Prefect client)."""
    variables = _notifier_variables(client)
    alive = _existing(client, sorted({v.job_id for v in variables}))
    return [v for v in variables if v.job_id not in alive]


def remove_orphan_variables(client: Any, *, dry_run: bool = False) -> list[Orphan]:
    """Delete (or with ``dry_run`` only list) the orphans; returns them."""
    orphans = orphan_variables(client)
    if not dry_run:
        from prefect.exceptions import ObjectNotFound

        for orphan in orphans:
            try:
                client.delete_variable_by_name(orphan.name)
            except ObjectNotFound:  # removed meanwhile (a concurrent prune)
                pass
    return orphans
