"""Bounds for the numbers a user types, checked when the command line is parsed.

Click's ranges let ``nan`` through (every comparison with it is false) and a float
option takes ``inf``; a sleep of ``inf`` seconds or a deadline ``nan`` seconds away
fails far from the flag that caused it. So every duration flag goes through
:func:`seconds`, which names the flag and the range in one ``error:`` line (exit 4).
"""

from __future__ import annotations

import math

from workspaces_jobs.errors import BadInput

#: A day: the longest pause between sweeps or syncs that still makes sense.
MAX_INTERVAL = 86_400.0


def seconds(value: float, flag: str, *, low: float = 0.0, high: float = MAX_INTERVAL) -> float:
    """``value`` if it is a finite number of seconds in ``[low, high]``, else BadInput."""
    if not (math.isfinite(value) and low <= value <= high):
        raise BadInput(f"{flag} {value:g} is out of range: give {low:g} to {high:g} seconds")
    return value
