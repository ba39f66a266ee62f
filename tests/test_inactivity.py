"""The inactivity guard's timing rule, with an injected clock (no server, no sleeps)."""

from __future__ import annotations

from workspaces_jobs.flows.inactivity import InactivityGuard


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_marks_once_after_the_timeout_and_activity_resets_it() -> None:
    clock = Clock()
    marks: list[tuple[str, float]] = []

    def mark(job_id: str, timeout: float) -> bool:
        marks.append((job_id, timeout))
        return True

    guard = InactivityGuard("job", 10.0, clock=clock, mark=mark)
    clock.now = 109.9
    assert not guard.check()
    guard.touch()  # a line at 109.9: the silence starts again
    clock.now = 119.8
    assert not guard.check() and marks == []
    clock.now = 119.9
    assert guard.check() and marks == [("job", 10.0)]
    clock.now = 500.0
    assert not guard.check() and marks == [("job", 10.0)]  # once per job


def test_a_failing_mark_is_not_retried_and_does_not_raise() -> None:
    clock = Clock()
    calls: list[str] = []

    def boom(job_id: str, timeout: float) -> bool:
        calls.append(job_id)
        raise RuntimeError("API down")

    guard = InactivityGuard("job", 1.0, clock=clock, mark=boom)
    clock.now = 101.0
    assert guard.check() is False
    clock.now = 200.0
    assert guard.check() is False and calls == ["job"]  # the watchdog is the fallback
