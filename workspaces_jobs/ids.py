"""Job ids as lists show them: the shortest prefix that is unique among the rows shown.

Prefect's scheduler creates runs in bursts whose UUIDs (v7-like, time-ordered) share their
first eight characters, so a fixed ``id[:8]`` column showed nine identical "01a22de4" in one
list. Lists therefore show :func:`short_ids` (a prefix long enough to be unique among the rows
shown, at least :data:`MIN_PREFIX` characters), and every command or page that takes a job id
goes through :func:`workspaces_jobs.gateway.resolve_job_id`, which accepts a full id or
any unique prefix. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Lists never show fewer characters than this (the length users are used to).
MIN_PREFIX = 8


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
