"""``wsjobs logs JOB [--follow] [--tail N] [--device D] [--step S] [--level L]``.

Prints a job's log lines (terminal-safe: no escape sequence of device output ever reaches
the terminal), optionally following a running job until it ends. Following polls the
API for lines newer than the last one seen (ids de-duplicate the inclusive bound) and
stops once the job is final and its last lines have arrived: Prefect ships log records
in batches (every 2 s), so after the final state it waits for the flow's own closing
line ("Finished in state ...") or :data:`FINAL_GRACE` seconds, whichever comes first.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

import typer

from workspaces_jobs.cli.output import fmt_time, print_json
from workspaces_jobs.jobfacts import LogFact
from workspaces_jobs.logview import select_lines, terminal_safe

#: Seconds between polls while following.
POLL = 0.5
#: Re-read this far behind the newest line seen: lines logged concurrently can reach the
#: API slightly out of timestamp order (ids de-duplicate the overlap).
OVERLAP = timedelta(seconds=3)
#: Seconds to wait for a final job's last log batch when its closing line does not come.
FINAL_GRACE = 4.0


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)


def format_line(line: LogFact) -> str:
    """One line as the CLI prints it: time, level, where, then the (safe) text."""
    where = " ".join(str(p) for p in (line.device, line.step, line.stream) if p) or "job"
    text = terminal_safe(line.message)
    return f"{fmt_time(line.ts)} {line.level:<7} {terminal_safe(where):<28} {text}"


def write_lines(lines: Iterable[LogFact], out: Callable[[str], object] | None = None) -> None:
    write = out or sys.stdout.write
    write("".join(format_line(line) + "\n" for line in lines))
    sys.stdout.flush()


def _closing(line: LogFact) -> bool:
    return line.step_id is None and line.message.startswith("Finished in state")


def logs(
    job_id: str = typer.Argument(..., help="Job id (or a unique prefix)."),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new lines until the job ends."
    ),
    tail: int | None = typer.Option(
        None, "--tail", "-n", min=0, help="Only the last N lines (of those selected)."
    ),
    device: list[str] = typer.Option([], "--device", "-d", help="Only this device (repeatable)."),
    step: list[str] = typer.Option([], "--step", "-s", help="Only this step (repeatable)."),
    level: list[str] = typer.Option(
        [], "--level", help="Only this level, e.g. ERROR, WARNING (repeatable)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the lines as a JSON array."),
) -> None:
    """A job's log lines, oldest first; --follow waits for new ones until the job ends
    (then exits with the job's code, as `wsjobs run`)."""
    from workspaces_jobs.cli.connection import connect
    from workspaces_jobs.gateway import resolve_job_id
    from workspaces_jobs.jobs import EXIT_CODES, job_state, read_logs

    connect()
    job_id = resolve_job_id(job_id)

    def pick(lines: list[LogFact]) -> list[LogFact]:
        return select_lines(lines, devices=device, steps=step, levels=level)

    every = read_logs(job_id)
    shown = pick(every)
    if tail is not None:
        shown = shown[len(shown) - tail :] if tail else []
    if json_out and not follow:
        print_json([line.__dict__ for line in shown])
        return
    if json_out:
        raise typer.BadParameter("--json cannot be combined with --follow", param_hint="--json")
    write_lines(shown)
    if not follow:
        return
    seen = {line.id for line in every}
    last = every[-1].ts if every else None
    closed = any(_closing(line) for line in every)
    final_at: float | None = None
    while True:
        status, _, _ = job_state(job_id)
        if status.is_final and final_at is None:
            final_at = time.monotonic()
        since = last - OVERLAP if last else None
        fresh = [line for line in read_logs(job_id, after=since) if line.id not in seen]
        if fresh:
            seen.update(line.id for line in fresh)
            last = max(last or fresh[0].ts, *(line.ts for line in fresh))
            closed = closed or any(_closing(line) for line in fresh)
            write_lines(pick(fresh))
        if final_at is not None and (
            (closed and not fresh) or time.monotonic() - final_at > FINAL_GRACE
        ):
            raise typer.Exit(EXIT_CODES[status])
        time.sleep(POLL)
