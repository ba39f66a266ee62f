"""Log lines for people (pure): terminal safety, ANSI colours as CSS classes, per-step tails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workspaces_jobs.jobfacts import JobFact, LogFact
from workspaces_jobs.logview import (
    ansi_html,
    group_logs,
    select_lines,
    sgr_segments,
    terminal_safe,
)

HOSTILE = "a\x1b[31mred\x1b[0m \x1b]0;title\x07\x1b]8;;http://x\x1b\\link\x1b[2J\x1b[H\r\x07\x9bz"


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("plain text", "plain text"),
        ("tab\tstays", "tab\tstays"),
        (HOSTILE, "ared linkz"),
        ("\x1bcreset \x1b(Bcharset", "reset charset"),
        ("half \x1b[", "half "),
    ],
)
def test_terminal_safe_removes_every_escape_and_control(text: str, safe: str) -> None:
    out = terminal_safe(text)
    assert out == safe
    assert "\x1b" not in out and all(c == "\t" or c.isprintable() for c in out)


def test_sgr_codes_become_classes_and_state_carries_across_codes() -> None:
    text = "n \x1b[1;32mbold green\x1b[22m green\x1b[39;44m on blue\x1b[m plain \x1b[38;5;9mb"
    assert sgr_segments(text) == [
        ("n ", ()),
        ("bold green", ("a-fg-green", "a-bold")),
        (" green", ("a-fg-green",)),
        (" on blue", ("a-bg-blue",)),
        (" plain ", ()),
        ("b", ("a-fg-bright-red",)),
    ]


def test_ansi_html_escapes_text_and_uses_classes_only() -> None:
    html = str(ansi_html('<script>x</script> \x1b[31m"red" & <b>\x1b[0m\x1b]0;t\x07'))
    assert html == (
        '&lt;script&gt;x&lt;/script&gt; <span class="a-fg-red">&#34;red&#34; &amp; &lt;b&gt;</span>'
    )
    assert "style=" not in html and "\x1b" not in html


def _job(counts: dict[tuple[str, str], int]) -> JobFact:
    t0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
    job = JobFact(
        "j", "", "a", "", "", "In progress", None, None, None, None,
        None, None, None, None, None, None, {}, [], None, None, None,
    )  # fmt: skip
    n = 0
    for (device, step), count in counts.items():
        for i in range(count):
            n += 1
            job.logs.append(
                LogFact(
                    f"l{n}",
                    "j",
                    None,
                    device,
                    step,
                    t0 + timedelta(seconds=n),
                    "INFO",
                    "out",
                    f"{device} {step} {i}",
                )  # fmt: skip
            )
    return job


def test_group_logs_keeps_the_last_lines_of_each_step_and_counts_the_rest() -> None:
    job = _job({("d1", "a"): 25, ("d1", "b"): 3, ("d2", "a"): 10})
    groups = group_logs(job, cap=10)
    got = {
        (g.device, s.step): (len(s.lines), s.hidden, s.lines[-1].message)
        for g in groups
        for s in g.steps
    }
    assert got == {
        ("d1", "a"): (10, 15, "d1 a 24"),
        ("d1", "b"): (3, 0, "d1 b 2"),
        ("d2", "a"): (10, 0, "d2 a 9"),
    }
    everything = group_logs(job, cap=None)
    assert sum(g.count for g in everything) == 38 == sum(g.count for g in groups)


def test_select_lines_by_device_step_and_level() -> None:
    job = _job({("d1", "a"): 2, ("d1", "b"): 2, ("d2", "a"): 2})
    job.logs[0].level = "ERROR"
    assert [line.id for line in select_lines(job.logs, devices=["d1"], steps=["b"])] == ["l3", "l4"]
    assert [line.id for line in select_lines(job.logs, levels=["error"])] == ["l1"]
    assert len(select_lines(job.logs)) == 6
