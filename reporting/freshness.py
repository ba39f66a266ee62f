"""How old the history is: the one-line warning ``list``/``device``/``export`` print.

Those commands no longer sync in the foreground (issue 17): the history is kept current
in the background (the managed server's ``history-sync`` companion, the web view's loop,
or the ``history-sync`` deployment), so a command reads what is there at once and says
when that is older than ``WSJOBS_HISTORY_STALE_AFTER`` seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from workspaces_jobs.settings import get_settings


def last_synced(con: Any) -> datetime | None:
    """When the newest finished sync pass (any API) ended; None if none ever did."""
    row = con.cursor().execute("SELECT max(last_finished) FROM sync_state").fetchone()
    return row[0] if row and row[0] is not None else None


def stale_warning(
    con: Any, *, now: datetime | None = None, bound: float | None = None
) -> str | None:
    """The warning to print, or None while the history is fresh (or the bound is 0)."""
    bound = get_settings().history_stale_after if bound is None else bound
    if bound <= 0:
        return None
    now = now or datetime.now(UTC)
    last = last_synced(con)
    hint = (
        "run `wsjobs sync` (or add --sync), or keep it current in the background with"
        " `wsjobs server start` or `wsjobs ui`"
    )
    if last is None:
        return f"the history has never been synced: {hint}"
    age = (now - last).total_seconds()
    if age <= bound:
        return None
    return (
        f"the history was last synced {_ago(age)} ago ({last.astimezone(UTC):%Y-%m-%d %H:%M}"
        f" UTC), more than WSJOBS_HISTORY_STALE_AFTER={bound:g} s: {hint}"
    )


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
