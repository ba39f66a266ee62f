"""Job ids as users type them: the shortest prefix a list shows, and the one resolver.

Prefect's scheduler creates runs in bursts whose UUIDs (v7-like, time-ordered) share their
first eight characters, so a fixed ``id[:8]`` column showed nine identical "01a22de4" in one
list. Lists therefore show :func:`short_ids` (a prefix long enough to be unique among the rows
shown, at least :data:`MIN_PREFIX` characters), and every command or page that takes a job id
goes through :func:`resolve_job_id`, which accepts a full id or any unique prefix:

* a full UUID is used as is (no lookup: the caller's read says if it does not exist);
* a prefix is looked up in the history file (every job a list has shown is there) and in the
  Prefect API among the jobs not ended yet (Pending or In progress: the ones a user cancels or
  kills right after scheduling, before a sync has run);
* no match is :class:`~workspaces_jobs.errors.NotFound`, several are
  :class:`~workspaces_jobs.errors.BadInput` listing the candidates, so the user can add
  characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

from workspaces_jobs.errors import BadInput, NotFound

#: Lists never show fewer characters than this (the length users are used to).
MIN_PREFIX = 8
#: A prefix shorter than this matches too much to be meant as an id.
MIN_INPUT = 4
#: How many candidates an "ambiguous" error names.
SHOWN_CANDIDATES = 10

_PREFIX_RE = re.compile(r"^[0-9a-f-]+$")


def short_len(ids: Iterable[str], *, minimum: int = MIN_PREFIX) -> int:
    """The shortest length >= ``minimum`` at which every id of ``ids`` is distinct.

    One length for the whole column keeps it aligned. A prefix never ends on a ``-``
    (it would read as a typo), so the length skips past a dash.
    """
    unique = sorted(set(ids))
    length = minimum
    for a, b in zip(unique, unique[1:], strict=False):
        common = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            common += 1
        length = max(length, common + 1)
    longest = max((len(i) for i in unique), default=length)
    sample = unique[0] if unique else ""
    while length < longest and sample[length - 1 : length] == "-":
        length += 1
    return min(length, longest) if unique else minimum


def short_ids(ids: Sequence[str], *, minimum: int = MIN_PREFIX) -> dict[str, str]:
    """``{id: prefix}`` for a list's rows (see :func:`short_len`)."""
    length = short_len(ids, minimum=minimum)
    return {i: i[:length] for i in ids}


def canonical(text: str) -> str | None:
    """The id as the API spells it when ``text`` is a full UUID, else None."""
    try:
        return str(UUID(text.strip()))
    except ValueError:
        return None


def history_candidates(prefix: str, *, con_factory: Callable[[], Any] | None = None) -> list[str]:
    """Job ids in the history file starting with ``prefix`` (empty if there is no history)."""
    from workspaces_jobs.reporting.store import open_store

    factory = con_factory or (lambda: open_store(read_only=True))
    try:
        with factory() as con:
            rows = (
                con.cursor()
                .execute(
                    "SELECT id FROM jobs WHERE starts_with(id, $p) ORDER BY id LIMIT $n",
                    {"p": prefix, "n": SHOWN_CANDIDATES + 1},
                )
                .fetchall()
            )
    except Exception:  # no history yet, or it is locked/moving: the API still answers
        return []
    return [str(r[0]) for r in rows]


def api_candidates(prefix: str) -> list[str]:
    """Ids of jobs not ended yet (Prefect API) starting with ``prefix``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    from workspaces_jobs import runmeta
    from workspaces_jobs.server import ensure_api

    ensure_api()
    active = [
        StateType.SCHEDULED,
        StateType.PENDING,
        StateType.RUNNING,
        StateType.CANCELLING,
        StateType.PAUSED,
    ]
    found: list[str] = []
    with get_client(sync_client=True) as client:
        offset, page = 0, 200
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[runmeta.JOB_TAG]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=active)),
                ),
                limit=page,
                offset=offset,
            )
            found += [str(r.id) for r in runs if str(r.id).startswith(prefix)]
            if len(runs) < page or offset > 5000:
                break
            offset += page
    return found


def resolve_job_id(
    text: str,
    *,
    con_factory: Callable[[], Any] | None = None,
    live: Callable[[str], list[str]] | None = api_candidates,
) -> str:
    """A full job id from a full id or a unique prefix; one-line error otherwise.

    ``con_factory`` opens the history (default: the configured file, read-only); ``live``
    lists matching ids of jobs not ended yet (default: the Prefect API; None skips it).
    """
    value = (text or "").strip().lower()
    full = canonical(value)
    if full:
        return full
    if len(value) < MIN_INPUT or not _PREFIX_RE.match(value):
        raise BadInput(
            f"{text!r} is not a job id: give the id or at least its first {MIN_INPUT} "
            "characters, as `wsjobs list` shows them"
        )
    found = set(history_candidates(value, con_factory=con_factory))
    if live is not None:
        found.update(live(value))
    if not found:
        raise NotFound(f"no job id starts with {value!r}: check the id with `wsjobs list`")
    if len(found) > 1:
        ordered = sorted(found)
        names = ", ".join(ordered[:SHOWN_CANDIDATES])
        more = f" and {len(ordered) - SHOWN_CANDIDATES} more" if len(ordered) > 10 else ""
        raise BadInput(
            f"job id prefix {value!r} is ambiguous: it matches {names}{more}; type more characters"
        )
    return found.pop()
