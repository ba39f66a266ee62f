"""History retention: ``wsjobs prune --older-than 2y [--dry-run]``.

The history is the audit log: it keeps a finished job after Prefect has dropped it
(Prefect's own ``db_vacuum`` keeps the operational store small, see docs/retention.md), so it
needs its own retention. A prune removes **final** jobs (Completed, Completed with
errors, Error, Canceled by the user) that ended — or, without an end, were created —
before ``now - older_than``, with every row of theirs in any table that has a ``job_id``
column (steps, devices, logs, states, notifications, sync bookkeeping, and tables later
migrations add). A Pending or In progress job is never touched, however old. One
transaction: a failed prune changes nothing. SQL in ``reporting/sql/prune_*.sql``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from workspaces_jobs.errors import BadInput

_AGE = re.compile(r"^(\d{1,6})\s*(d|w|mo|y)$")
_UNIT_DAYS = {"d": 1, "w": 7, "mo": 30, "y": 365}
#: Longest accepted age (keeps the cutoff a valid date).
MAX_AGE = timedelta(days=365 * 200)
_SELECTION = "_wsjobs_prune"


def parse_age(text: str) -> timedelta:
    """``90d``, ``12w``, ``18mo``, ``2y`` (a year is 365 days, a month 30) → timedelta."""
    match = _AGE.match(text.strip().lower())
    if not match:
        raise BadInput(f"bad age {text!r}: write e.g. 90d, 12w, 18mo or 2y")
    age = timedelta(days=int(match[1]) * _UNIT_DAYS[match[2]])
    if not timedelta(days=1) <= age <= MAX_AGE:
        raise BadInput(f"bad age {text!r}: give at least 1d and at most 200y")
    return age


def sql_file(name: str) -> str:
    return (resources.files("workspaces_jobs.reporting") / "sql" / name).read_text("utf-8")


@dataclass
class PruneResult:
    cutoff: datetime
    dry_run: bool
    jobs: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows (removed or to remove)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "jobs": self.jobs,
            "rows": dict(self.rows),
        }


def prune_history(con: Any, older_than: timedelta, *, now: datetime, dry_run: bool) -> PruneResult:
    """Remove (or with ``dry_run`` only count) final jobs older than ``older_than``."""
    cutoff = now - older_than
    result = PruneResult(cutoff=cutoff, dry_run=dry_run)
    cur = con.cursor()
    try:
        cur.execute("BEGIN TRANSACTION")
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE {_SELECTION} AS {sql_file('prune_select.sql')}",
            {"cutoff": cutoff},
        )
        tables = [r[0] for r in cur.execute(sql_file("prune_tables.sql")).fetchall()]
        for table in tables:
            # Table names come from the catalog itself, quoted; the ids from the selection.
            quoted = '"' + str(table).replace('"', '""') + '"'
            where = f"job_id IN (SELECT id FROM {_SELECTION})"
            row = cur.execute(f"SELECT count(*) FROM {quoted} WHERE {where}").fetchone()
            result.rows[str(table)] = int(row[0]) if row else 0
            if not dry_run:
                cur.execute(f"DELETE FROM {quoted} WHERE {where}")
        row = cur.execute(f"SELECT count(*) FROM {_SELECTION}").fetchone()
        result.jobs = int(row[0]) if row else 0
        if not dry_run:
            cur.execute(f"DELETE FROM jobs WHERE id IN (SELECT id FROM {_SELECTION})")
        cur.execute(f"DROP TABLE {_SELECTION}")
        cur.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    finally:
        cur.close()
    return result
