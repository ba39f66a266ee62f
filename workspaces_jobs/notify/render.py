"""The email a subscriber gets: subject, plain-text and HTML bodies from Jinja2 templates.

Templates ship in ``workspaces_jobs/notify/templates`` and load through
``importlib.resources`` (so they come from the installed package, zip or not) with
``StrictUndefined`` (a typo in a template is an error in tests, not a blank in a mail).
The HTML environment autoescapes: job info, log lines and device names are user or
script text and may contain ``<script>``. Nothing here does I/O besides reading the
templates, so it is tested on hand-made job facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, FunctionLoader, StrictUndefined

from workspaces_jobs.jobfacts import JobFact, LogFact, StepFact

TEMPLATES = ("email.txt.j2", "email.html.j2")


@dataclass(frozen=True)
class FailedStep:
    device: str
    step: str
    exit_code: int | None
    message: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def _load(name: str) -> str:
    return (resources.files("workspaces_jobs.notify") / "templates" / name).read_text("utf-8")


@cache
def _env(html: bool) -> Environment:
    return Environment(
        loader=FunctionLoader(_load),
        autoescape=html,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def fmt_duration(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return "-"
    seconds = max(0, round((end - start).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min {secs} s"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def failed_steps(
    steps: Sequence[StepFact], tails: Mapping[str, Sequence[LogFact]]
) -> list[FailedStep]:
    """Failed steps in device order, each with the last log lines read for it."""
    return [
        FailedStep(
            device=s.device,
            step=s.step,
            exit_code=s.exit_code,
            message=s.message or s.status,
            lines=tuple(f"{line.stream or '-'} | {line.message}" for line in tails.get(s.id, ())),
        )
        for s in steps
        if s.status in ("Failed", "Crashed")
    ]


def subject_of(job: JobFact) -> str:
    reason = f" ({job.reason})" if job.reason else ""
    recovered = ", recovered after inactivity" if job.recovered else ""
    action = " ".join(job.action.split()) or "job"
    return f"[wsjobs] {action}: {job.status}{reason}{recovered} — job {job.id}"


def context(
    job: JobFact,
    *,
    link: str,
    tails: Mapping[str, Sequence[LogFact]],
    subscriber: Any,
    rule: Any = None,
) -> dict[str, Any]:
    return {
        "job": job,
        "subject": subject_of(job) + (f" [rule {rule.name}]" if rule is not None else ""),
        "link": link,
        "created": fmt_time(job.created),
        "started": fmt_time(job.started),
        "ended": fmt_time(job.ended),
        "duration": fmt_duration(job.started or job.created, job.ended),
        "devices": job.devices,
        "failed": failed_steps(job.steps, tails),
        "subscriber": subscriber,
        "rule": rule,
    }


def render(
    job: JobFact,
    *,
    link: str,
    tails: Mapping[str, Sequence[LogFact]],
    subscriber: Any,
    rule: Any = None,
) -> RenderedEmail:
    """The email; ``rule`` (a :class:`~.rules.Rule`) when a rule, not a subscription, sent it."""
    ctx = context(job, link=link, tails=tails, subscriber=subscriber, rule=rule)
    return RenderedEmail(
        subject=ctx["subject"],
        text=_env(False).get_template("email.txt.j2").render(ctx),
        html=_env(True).get_template("email.html.j2").render(ctx),
    )


def build_message(rendered: RenderedEmail, *, sender: str, to: str, job_id: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="wsjobs")
    message["X-Wsjobs-Job-Id"] = job_id
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
