"""The one clock that calendar decisions read: "today", "this week", "created 5 min ago".

Windows are computed from an instant; which instant is a policy, not arithmetic, so it
lives here and nowhere else. Functions that decide a window take ``now=`` and fall back
to :func:`now`; processes the tests cannot reach through a parameter (``wsjobs list`` in
a subprocess, the ``wsjobs ui`` server) are pinned with ``WSJOBS_NOW``. That is how the
suite stands at 23:59:59, 00:00:01, Monday 00:00 or a quarter change on any day it runs,
and how a report can be re-run "as of" a past instant.

Only calendar decisions read this clock. Record stamps (when a row was synced or a claim
taken) and timeouts keep the real clock: pinning those would stop time for a server.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

from workspaces_jobs.errors import BadInput

#: Environment variable that pins :func:`now` (an ISO 8601 instant, e.g. ``2026-12-01T00:00:01Z``).
ENV = "WSJOBS_NOW"

#: A clock is anything that returns an aware instant; tests pass ``lambda: PINNED``.
Clock = Callable[[], datetime]


def parse(text: str) -> datetime:
    """``WSJOBS_NOW`` text → aware UTC instant; a value without an offset is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"bad {ENV} {text!r}: write an ISO instant such as 2026-12-01T00:00:01Z, or unset it"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def now() -> datetime:
    """The instant windows are computed from: ``WSJOBS_NOW`` when set, else the system clock."""
    pinned = os.environ.get(ENV, "").strip()
    return parse(pinned) if pinned else datetime.now(UTC)
