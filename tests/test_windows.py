"""Calendar windows in the user's zone: DST changes, week/quarter/year boundaries (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from workspaces_jobs.reporting import windows

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
SANTIAGO = ZoneInfo("America/Santiago")  # changes clocks at local midnight


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


CASES = [
    # (zone, age, now (UTC), expected start (UTC), expected end (UTC))
    # Paris, spring forward on Sun 2026-03-29 02:00 → 03:00: that day lasts 23 h.
    (PARIS, "today", utc(2026, 3, 29, 12), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
    # Week containing the change: Mon 23 Mar (UTC+1) to Mon 30 Mar (UTC+2), 167 h.
    (PARIS, "week", utc(2026, 3, 29, 12), utc(2026, 3, 22, 23), utc(2026, 3, 29, 22)),
    # Fall back on Sun 2026-10-25 03:00 → 02:00: that day lasts 25 h.
    (PARIS, "today", utc(2026, 10, 25, 12), utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)),
    # Just after local midnight on Monday is already the new week (UTC still Sunday).
    (PARIS, "week", utc(2026, 11, 22, 23, 30), utc(2026, 11, 22, 23), utc(2026, 11, 29, 23)),
    # Just before local midnight on Sunday is still the old week.
    (PARIS, "week", utc(2026, 11, 22, 22, 59), utc(2026, 11, 15, 23), utc(2026, 11, 22, 23)),
    # Quarter: Q2 starts 1 April local, after the DST change (UTC+2).
    (PARIS, "quarter", utc(2026, 4, 1, 0, 30), utc(2026, 3, 31, 22), utc(2026, 6, 30, 22)),
    (PARIS, "quarter", utc(2026, 3, 31, 21, 59), utc(2025, 12, 31, 23), utc(2026, 3, 31, 22)),
    # Year: New Year's Eve in UTC is already next year in Paris.
    (PARIS, "year", utc(2026, 12, 31, 23, 30), utc(2026, 12, 31, 23), utc(2027, 12, 31, 23)),
    (PARIS, "month", utc(2026, 2, 15), utc(2026, 1, 31, 23), utc(2026, 2, 28, 23)),
    # New York: spring forward Sun 2026-03-08 02:00 → 03:00.
    (NEW_YORK, "today", utc(2026, 3, 8, 15), utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
    (NEW_YORK, "week", utc(2026, 3, 8, 15), utc(2026, 3, 2, 5), utc(2026, 3, 9, 4)),
    # Fall back Sun 2026-11-01 02:00 → 01:00: 25 h day.
    (NEW_YORK, "today", utc(2026, 11, 1, 15), utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)),
    # Evening in New York is already tomorrow in UTC: still today locally.
    (NEW_YORK, "today", utc(2026, 11, 24, 3), utc(2026, 11, 23, 5), utc(2026, 11, 24, 5)),
    # Year boundary: in UTC it is 2027, in New York still 2026.
    (NEW_YORK, "year", utc(2027, 1, 1, 2), utc(2026, 1, 1, 5), utc(2027, 1, 1, 5)),
    (NEW_YORK, "quarter", utc(2026, 10, 1, 3), utc(2026, 7, 1, 4), utc(2026, 10, 1, 4)),
    (NEW_YORK, "quarter", utc(2026, 12, 15), utc(2026, 10, 1, 4), utc(2027, 1, 1, 5)),
    # Santiago springs forward at midnight (2026-09-06 00:00 → 01:00): the day starts at 01:00.
    (SANTIAGO, "today", utc(2026, 9, 6, 15), utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)),
]


@pytest.mark.parametrize(("tz", "age", "now", "start", "end"), CASES)
def test_age_windows(tz: ZoneInfo, age: str, now: datetime, start: datetime, end: datetime) -> None:
    win = windows.age_window(age, tz=tz, now=now)
    assert (win.start, win.end) == (start, end)
    assert win.contains(now)
    assert not win.contains(end) and win.contains(start)
    assert win.start is not None and win.start.astimezone(tz).hour in (0, 1)


def test_dst_days_are_23_and_25_hours() -> None:
    spring = windows.age_window("today", tz=PARIS, now=utc(2026, 3, 29, 12))
    fall = windows.age_window("today", tz=PARIS, now=utc(2026, 10, 25, 12))
    assert spring.end and spring.start and spring.end - spring.start == timedelta(hours=23)
    assert fall.end and fall.start and fall.end - fall.start == timedelta(hours=25)


def test_week_starts_monday_in_every_zone() -> None:
    now = utc(2026, 11, 28, 12)  # a Saturday
    for tz in (PARIS, NEW_YORK, ZoneInfo("Asia/Tokyo"), ZoneInfo("UTC")):
        win = windows.age_window("week", tz=tz, now=now)
        assert win.start is not None
        local = win.start.astimezone(tz)
        assert (local.weekday(), local.hour, local.minute) == (0, 0, 0)


def test_all_is_unbounded_and_unknown_age_is_an_error() -> None:
    assert windows.age_window("all", tz=PARIS) == windows.Window(None, None, "at any time")
    with pytest.raises(ValueError, match="unknown age 'fortnight': use one of today"):
        windows.age_window("fortnight", tz=PARIS)


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("2026-03-29", False, utc(2026, 3, 28, 23)),
        ("2026-03-29", True, utc(2026, 3, 29, 22)),  # end of a 23 h day
        ("2026-03-29T12:00", False, utc(2026, 3, 29, 10)),
        ("2026-03-29 12:00:30", False, utc(2026, 3, 29, 10, 0, 30)),
        ("2026-03-29T12:00+00:00", False, utc(2026, 3, 29, 12)),
    ],
)
def test_parse_instant(text: str, end: bool, expected: datetime) -> None:
    assert windows.parse_instant(text, tz=PARIS, end=end) == expected


def test_bad_inputs_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match="bad date '29/03/2026': write YYYY-MM-DD"):
        windows.parse_instant("29/03/2026", tz=PARIS)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        windows.resolve_zone("Mars/Olympus")
    with pytest.raises(ValueError, match="bad duration '1 hour'"):
        windows.parse_duration("1 hour")


def test_durations_and_system_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert windows.parse_duration("1h30m") == timedelta(minutes=90)
    assert windows.parse_duration("2d") == timedelta(days=2)
    assert windows.ago(timedelta(hours=1), now=utc(2026, 1, 1)) == utc(2025, 12, 31, 23)
    monkeypatch.setenv("TZ", "America/New_York")
    assert windows.system_zone_name() == "America/New_York"
    assert windows.resolve_zone(None) == NEW_YORK
    monkeypatch.setenv("TZ", "Not/AZone")
    assert windows.system_zone_name() != "Not/AZone"
