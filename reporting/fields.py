"""The one registry of the jobs list: every filter field, column and sort key, declared once.

Each :class:`FilterField` says its name (the :class:`~.filters.FilterSpec` attribute), its
type, its SQL (a ``where`` builder, or none for fields that shape the output: sort,
direction, limit, columns, zone), its description, its CLI option and its web control and
URL parameter. Each :class:`Column` says its SQL over ``jobs j``, its header and whether
it sorts. Every face derives from these tables:

* the CLI options of ``wsjobs list``, ``device``, ``export``, ``filters save`` and
  ``view set`` (:mod:`workspaces_jobs.cli.filteropts`);
* the WHERE clause and its words (:func:`~.filters.build_where` loops over
  :data:`FILTER_FIELDS`);
* the web list's controls and its URL state (:mod:`workspaces_jobs.web.listing`);
* the "Filter fields" table in docs/jobs-list.md (``tests/test_fields.py`` checks that the CLI, the
  web and the docs name the same fields).

To add a filter: add the attribute to ``FilterSpec``, one ``FilterField`` here (with its
``where`` builder) and one row in that table. To add a column: one ``Column`` in :data:`COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from workspaces_jobs.reporting import windows
from workspaces_jobs.status import JobStatus

#: When a job runs, the instant windows and the default sort use (the rule: :mod:`.windows`).
RUN = windows.RUN_TIME_SQL

# --- columns -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column users can show, sort or export: its SQL over ``jobs j`` and a header."""

    name: str
    sql: str
    header: str
    kind: str = "text"  # text | time | number | json
    sortable: bool = True
    aggregate: bool = False  # needs the per-job device aggregates (``da``)
    description: str = ""


# A device is "ok" when Completed and "failed" when it ended any other way (Error, Completed
# with errors, Canceled) -- the same rule as the history's ``v_jobs.devices_failed``.
DEVICE_OK = f"d.status = '{JobStatus.COMPLETED.value}'"
DEVICE_FAILED = (
    f"d.status NOT IN ('{JobStatus.COMPLETED.value}', '{JobStatus.PENDING.value}', "
    f"'{JobStatus.IN_PROGRESS.value}')"
)

#: Every column of the jobs list, by name. Identifiers in SQL come only from here.
COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("id", "j.id", "id"),
        Column("action", "j.action", "action"),
        Column("info", "j.info", "info"),
        Column("status", "j.status", "status"),
        Column("reason", "j.reason", "reason"),
        Column("owner", "j.owner", "owner"),
        Column("created", "j.created", "created", "time"),
        Column("run_at", RUN, "runs at", "time"),
        Column("expected_start", "j.expected_start", "expected start", "time"),
        Column("started", "j.started", "started", "time"),
        Column("ended", "j.ended", "ended", "time"),
        Column(
            "duration",
            "round(epoch(j.ended) - epoch(j.started), 3)",
            "duration (s)",
            "number",
        ),
        Column("progress", "j.progress", "progress", "number"),
        # Kept on the job row by the sync (migration 003), not aggregated per query.
        Column("devices", "j.device_names", "devices"),
        Column("devices_ok", "coalesce(j.devices_ok, 0)", "ok", "number"),
        Column("devices_failed", "coalesce(j.devices_failed, 0)", "failed", "number"),
        Column("parameters", "j.parameters", "parameters", "json", False),
        Column("tags", "array_to_string(j.tags, ',')", "tags", "text", False),
        Column("canceled_by", "j.canceled_by", "canceled by"),
        Column("rerun_of", "j.rerun_of", "rerun of"),
        Column("deployment_id", "j.deployment_id", "deployment"),
        Column("name", "j.name", "flow run"),
        Column("state_message", "j.state_message", "state message", sortable=False),
        Column("prefect_state_type", "j.prefect_state_type", "Prefect state type"),
        Column("prefect_state_name", "j.prefect_state_name", "Prefect state"),
        Column("updated", "j.updated", "updated", "time"),
        Column(
            "recovered",
            "CASE WHEN j.recovered THEN 'recovered after inactivity' ELSE '' END",
            "recovered",
            description="the job was Error (inactivity), then finished with its real outcome",
        ),
        Column(
            "notes",
            "(SELECT string_agg(strftime(n.time AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ')"
            " || ' ' || n.author || ': ' || n.text, ' | ' ORDER BY n.time, n.id)"
            " FROM notes n WHERE n.job_id = j.id)",
            "notes",
            sortable=False,
            description="the job's notes, oldest first: `TIME AUTHOR: TEXT`, joined by ` | `",
        ),
    )
}

#: Columns of ``wsjobs device NAME``: that device's own result in each job.
DEVICE_COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("device", "dv.device", "device"),
        Column("device_status", "dv.status", "device status"),
        Column("device_steps_ok", "dv.steps_ok", "steps ok", "number"),
        Column("device_steps_failed", "dv.steps_failed", "steps failed", "number"),
        Column("device_started", "dv.started", "device started", "time"),
        Column("device_ended", "dv.ended", "device ended", "time"),
    )
}

#: What ``--search`` looks at: every job column as text, parameters and tags included.
#: An OR of one ILIKE per column: measured on 1M jobs it is ~2x faster than one ILIKE over
#: a concatenation of the columns (building that string per row is the cost).
SEARCH_COLUMNS = (
    "j.id",
    "j.name",
    "j.action",
    "j.info",
    "j.owner",
    "j.status",
    "j.reason",
    "j.prefect_state_type",
    "j.prefect_state_name",
    "j.state_message",
    "j.deployment_id",
    "j.parameters",
    "array_to_string(j.tags, ',')",
    "j.canceled_by",
    "j.rerun_of",
)

#: Per-job aggregates of ``job_devices``, joined as ``da`` by the columns that need them.
DEVICE_AGGREGATES = (
    "SELECT d.job_id, string_agg(d.device, ',' ORDER BY d.device) AS devices, "
    f"count(*) FILTER (WHERE {DEVICE_OK}) AS devices_ok, "
    f"count(*) FILTER (WHERE {DEVICE_FAILED}) AS devices_failed "
    "FROM job_devices d"
)

#: The owner value that means "whoever runs the query" (``my-jobs-today``).
ME = "@me"

# --- SQL helpers ----------------------------------------------------------------------------


def escape_like(text: str) -> str:
    """Make ``text`` literal inside ``LIKE/ILIKE ... ESCAPE '\\'``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains_pattern(text: str) -> str:
    """A case-insensitive substring pattern for ``ILIKE ... ESCAPE '\\'``."""
    return f"%{escape_like(text)}%"


def ilike(expr: str, param: str, text: str) -> str:
    """``expr ILIKE $param ESCAPE '\\'`` -- the ESCAPE clause only when the text needs it.

    With no ``%``, ``_`` or ``\\`` in the user's text the escaped pattern is the text
    itself, so the clause changes nothing but speed: DuckDB turns a plain ``ILIKE
    '%...%'`` into a substring scan, 5-25x faster than its ESCAPE path (measured on
    1M jobs / 8M log lines).
    """
    if escape_like(text) == text:
        return f"{expr} ILIKE ${param}"
    return f"{expr} ILIKE ${param} ESCAPE '\\'"


def in_list(expr: str, name: str, values: tuple[str, ...], params: dict[str, Any]) -> str:
    keys = []
    for i, value in enumerate(values):
        params[f"{name}_{i}"] = value
        keys.append(f"${name}_{i}")
    return f"{expr} IN ({', '.join(keys)})"


def _or_words(values: Iterable[str]) -> str:
    return " or ".join(values)


# --- filter fields ----------------------------------------------------------------------------


@dataclass
class WhereBuild:
    """The WHERE clause being built: each field's builder appends its condition and words."""

    spec: Any  # FilterSpec (not imported: filters.py imports this module)
    tz: tzinfo
    now: datetime | None
    default_age: str
    user: Callable[[], str]
    conds: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
    lower: datetime | None = None  # earliest creation time the filter allows (log pruning)


def _where_age(b: WhereBuild) -> None:
    spec = b.spec
    age = spec.age or (None if (spec.since or spec.until) else b.default_age)
    if not age or age == "all":
        return
    win = windows.age_window(age, tz=b.tz, now=b.now)
    assert win.start is not None and win.end is not None
    b.conds.append(f"{RUN} >= $run_from AND {RUN} < $run_to")
    b.params.update(run_from=win.start, run_to=win.end)
    b.parts.append(f"run {win.label}")
    b.lower = win.start


def _where_since(b: WhereBuild) -> None:
    since = windows.parse_instant(b.spec.since, tz=b.tz)
    b.conds.append(f"{RUN} >= $since")
    b.params["since"] = since
    b.parts.append(f"run since {windows.describe_instant(since, b.tz)}")
    b.lower = max(b.lower, since) if b.lower else since


def _where_until(b: WhereBuild) -> None:
    text = b.spec.until.strip()
    until = windows.parse_instant(text, tz=b.tz, end=True)
    b.conds.append(f"{RUN} < $until")
    b.params["until"] = until
    b.parts.append(
        f"run until {text}"
        if len(text) == 10
        else f"run before {windows.describe_instant(until, b.tz)}"
    )


def _where_statuses(b: WhereBuild) -> None:
    b.conds.append(in_list("j.status", "status", b.spec.statuses, b.params))
    b.parts.append(f"status is {_or_words(b.spec.statuses)}")


def _where_owners(b: WhereBuild) -> None:
    owners = tuple(b.user() if o == ME else o for o in b.spec.owners)
    b.conds.append(in_list("j.owner", "owner", owners, b.params))
    words = [f"you ({o})" if s == ME else o for s, o in zip(b.spec.owners, owners, strict=True)]
    b.parts.append(f"owner is {_or_words(words)}")


def _where_actions(b: WhereBuild) -> None:
    b.conds.append(in_list("j.action", "action", b.spec.actions, b.params))
    b.parts.append(f"action is {_or_words(b.spec.actions)}")


def _where_devices(b: WhereBuild) -> None:
    inner = in_list("d.device", "device", b.spec.devices, b.params)
    b.conds.append(f"j.id IN (SELECT d.job_id FROM job_devices d WHERE {inner})")
    b.parts.append(f"ran on {_or_words(b.spec.devices)}")


def _where_started_over(b: WhereBuild) -> None:
    delta = windows.parse_duration(b.spec.started_over)
    b.conds.append("j.started < $started_before")
    b.params["started_before"] = windows.ago(delta, now=b.now)
    b.parts.append(f"started more than {b.spec.started_over} ago")


def _where_search(b: WhereBuild) -> None:
    text = b.spec.search
    ors = " OR ".join(ilike(c, "search", text) for c in SEARCH_COLUMNS)
    b.conds.append(f"({ors})")
    b.params["search"] = contains_pattern(text)
    b.parts.append(f'any column contains "{text}"')


def _where_search_logs(b: WhereBuild) -> None:
    # Semi-join on the logs, cut to the window first: log lines come after the job was
    # started (an hour's margin for clock skew between hosts).
    # contains(lower(..)) rather than ILIKE: the same case-insensitive substring test
    # (DuckDB lower-cases both sides, the text once), with no pattern characters to
    # escape, and the logs are the one big scan: measured 1M log lines, CPU per scan:
    # ILIKE 100 ms (ESCAPE 200), contains(lower()) 65 ms on the single file; 200 vs
    # 108 ms on the DuckLake history (#20: whole-history log search < 700 ms at 10M).
    text = b.spec.search_logs
    log_conds = ["contains(lower(l.message), lower($search_logs))"]
    b.params["search_logs"] = text
    if b.lower is not None:
        log_conds.insert(0, "l.ts >= $logs_from")
        b.params["logs_from"] = b.lower - windows.LOG_SKEW
    b.conds.append(f"j.id IN (SELECT l.job_id FROM logs l WHERE {' AND '.join(log_conds)})")
    b.parts.append(f'a log line contains "{text}"')


def _where_recovered(b: WhereBuild) -> None:
    if b.spec.recovered == "yes":
        b.conds.append("coalesce(j.recovered, false)")
        b.parts.append("recovered after inactivity")
    else:
        b.conds.append("NOT coalesce(j.recovered, false)")
        b.parts.append("not recovered after inactivity")


def _where_stopped_by(b: WhereBuild) -> None:
    # The activity log's verified actor, not the job's free-text canceled_by tag.
    who = tuple(b.user() if o == ME else o for o in b.spec.stopped_by)
    inner = in_list("a.who", "stopped_by", who, b.params)
    b.conds.append(
        f"j.id IN (SELECT a.job_id FROM activity a WHERE a.action IN ('cancel', 'kill')"
        f" AND {inner})"
    )
    words = [f"you ({o})" if s == ME else o for s, o in zip(b.spec.stopped_by, who, strict=True)]
    b.parts.append(f"canceled or killed by {_or_words(words)}")


#: Commands whose options derive from the registry.
LIST, DEVICE, EXPORT, SAVE, VIEW = "list", "device", "export", "filters save", "view set"
FILTER_COMMANDS = (LIST, DEVICE, EXPORT, SAVE)


@dataclass(frozen=True)
class FilterField:
    """One field of a filter, and how every face spells it.

    ``kind``: ``one`` (a string), ``many`` (repeatable, OR within the field), ``bool``
    (a ``--x/--y`` switch), ``int``, ``columns`` (a comma list of column names).
    ``web``: the list page's control: ``age`` (links), ``chips`` (status chips), ``search``
    (the search box), ``text``,
    ``date``, ``number``, ``select-sort``, ``select-dir``, ``checkboxes`` (columns).
    """

    name: str  # FilterSpec attribute
    param: str  # CLI argument name, URL query parameter
    kind: str
    option: str  # CLI option ("--status"; "--desc/--asc" for a switch)
    help: str
    web: str
    label: str  # the web control's label
    short: str | None = None
    url: str | None = None  # URL parameter when not ``param`` (``q``, ``dir``)
    where: Callable[[WhereBuild], None] | None = None  # None: shapes output, not rows
    commands: tuple[str, ...] = FILTER_COMMANDS
    help_for: tuple[tuple[str, str], ...] = ()  # (command, help) where it differs

    @property
    def url_param(self) -> str:
        return self.url or self.param

    @property
    def cli_options(self) -> tuple[str, ...]:
        """Every spelling of the option (``--desc``, ``--asc``; ``-s``)."""
        names = tuple(self.option.split("/"))
        return (*names, self.short) if self.short else names

    def help_in(self, command: str) -> str:
        return dict(self.help_for).get(command, self.help)


STATUS_WORDS = ", ".join(s.slug for s in JobStatus)

#: Every filter field, in the order options, controls and descriptions are shown.
FILTER_FIELDS: tuple[FilterField, ...] = (
    FilterField(
        "age",
        "age",
        "one",
        "--age",
        f"{'|'.join(windows.AGES)}: calendar window (default today).",
        "age",
        "Age",
        where=_where_age,
        commands=(*FILTER_COMMANDS, VIEW),
        help_for=((DEVICE, "Calendar window (default all)."),),
    ),
    FilterField(
        "since",
        "since",
        "one",
        "--since",
        "Created on/after DATE (YYYY-MM-DD[THH:MM]).",
        "date",
        "Created from",
        where=_where_since,
    ),
    FilterField(
        "until",
        "until",
        "one",
        "--until",
        "Created on/before DATE (a date includes that day).",
        "date",
        "Created until",
        where=_where_until,
    ),
    FilterField(
        "statuses",
        "status",
        "many",
        "--status",
        f"Status (repeatable): {STATUS_WORDS}.",
        "chips",
        "Status",
        short="-s",
        where=_where_statuses,
    ),
    FilterField(
        "owners",
        "owner",
        "many",
        "--owner",
        f"Owner (repeatable); {ME} = you.",
        "text",
        "Owner",
        where=_where_owners,
    ),
    FilterField(
        "actions",
        "action",
        "many",
        "--action",
        "Action name (repeatable).",
        "text",
        "Action",
        where=_where_actions,
    ),
    FilterField(
        "devices",
        "device",
        "many",
        "--device",
        "Jobs that ran on this device (repeatable).",
        "text",
        "Device",
        where=_where_devices,
        commands=(LIST, EXPORT, SAVE),
    ),
    FilterField(
        "search",
        "search",
        "one",
        "--search",
        "Case-insensitive text in any job column (info, parameters...).",
        "search",
        "Search any column",
        url="q",
        where=_where_search,
    ),
    FilterField(
        "search_logs",
        "search_logs",
        "one",
        "--search-logs",
        "Jobs with a log line containing TEXT.",
        "text",
        "Search the logs",
        where=_where_search_logs,
    ),
    FilterField(
        "started_over",
        "started_over",
        "one",
        "--started-over",
        "Started more than this long ago, e.g. 1h, 30m, 2d.",
        "text",
        "Started over (e.g. 1h)",
        where=_where_started_over,
    ),
    FilterField(
        "recovered",
        "recovered",
        "one",
        "--recovered",
        "yes: jobs that were Error (inactivity) and then finished by themselves; no: the others.",
        "text",
        "Recovered after inactivity (yes/no)",
        where=_where_recovered,
    ),
    FilterField(
        "stopped_by",
        "stopped_by",
        "many",
        "--stopped-by",
        f"Canceled or killed by NAME (repeatable; the activity log); {ME} = you.",
        "text",
        "Canceled/killed by",
        where=_where_stopped_by,
    ),
    FilterField(
        "sort",
        "sort",
        "one",
        "--sort",
        "Sort column (see --columns); default run_at (start, or expected start while Pending).",
        "select-sort",
        "Sort by",
        commands=(*FILTER_COMMANDS, VIEW),
    ),
    FilterField(
        "desc",
        "desc",
        "bool",
        "--desc/--asc",
        "Sort direction (default newest first).",
        "select-dir",
        "Direction",
        url="dir",
        commands=(*FILTER_COMMANDS, VIEW),
    ),
    FilterField(
        "limit",
        "limit",
        "int",
        "--limit",
        "At most N jobs (0 = all).",
        "number",
        "Rows per page",
        short="-n",
        commands=(*FILTER_COMMANDS, VIEW),
        help_for=((EXPORT, "At most N jobs (default all)."),),
    ),
    FilterField(
        "columns",
        "columns",
        "columns",
        "--columns",
        "Columns to show, e.g. id,action,status.",
        "checkboxes",
        "Columns",
        short="-c",
        commands=(*FILTER_COMMANDS, VIEW),
    ),
    FilterField(
        "tz",
        "tz",
        "one",
        "--tz",
        "Time zone for windows and times (default: system).",
        "text",
        "Time zone",
        commands=(*FILTER_COMMANDS, VIEW),
    ),
)

FIELDS_BY_NAME: dict[str, FilterField] = {f.name: f for f in FILTER_FIELDS}
FIELDS_BY_PARAM: dict[str, FilterField] = {f.param: f for f in FILTER_FIELDS}


def fields_for(command: str) -> tuple[FilterField, ...]:
    """The fields a command takes as options, in registry order."""
    return tuple(f for f in FILTER_FIELDS if command in f.commands)


def spec_values(values: dict[str, Any]) -> dict[str, Any]:
    """CLI/URL argument values keyed by ``param`` → FilterSpec fields (only those set)."""
    out: dict[str, Any] = {}
    for param, value in values.items():
        f = FIELDS_BY_PARAM[param]
        if value in (None, [], "", ()):
            continue
        out[f.name] = value
    return out
