"""Spreading a job over workers: the split into shards and the one outcome of their steps
(pure: the end-to-end cases run on the team setup in tests/test_team.py)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import TaskRun
from prefect.states import Completed, Failed, State

from workspaces_jobs.flows.fanout import outcome_from_shards
from workspaces_jobs.flows.spread import split
from workspaces_jobs.runmeta import step_message, step_task_name
from workspaces_jobs.status import job_status


@pytest.mark.parametrize(
    ("count", "size", "sizes"),
    [
        (0, 3, []),
        (1, 3, [1]),
        (3, 3, [3]),
        (9, 3, [3, 3, 3]),
        (10, 3, [3, 3, 2, 2]),
        (2000, 667, [667, 667, 666]),
        (2001, 500, [401, 400, 400, 400, 400]),
        (5, 1, [1, 1, 1, 1, 1]),
    ],
)
def test_split_keeps_order_in_as_few_even_shards_as_the_size_allows(
    count: int, size: int, sizes: list[int]
) -> None:
    names = [f"d{n:04d}" for n in range(count)]
    shards = split(names, size)
    assert [len(s) for s in shards] == sizes
    assert [n for s in shards for n in s] == names  # every device once, in order
    assert all(len(s) <= size for s in shards)


STEPS = [("prepare", True), ("check", False), ("finish", True)]


def _run(device: str, step: int, ok: bool, *, name: str | None = None) -> TaskRun:
    label, critical = STEPS[step]
    message = step_message(
        0 if ok else 3, position=step + 1, total=3, critical=critical, detail="done"
    )
    state: State[Any] = Completed(message=message) if ok else Failed(message=message)
    if name:
        state = Failed(name=name, message=message)
    return TaskRun(
        name=step_task_name(label, device),
        flow_run_id=uuid4(),
        task_key="run_step",
        dynamic_key=f"{device}-{step}",
        state=state,
    )


def _all_ok(device: str) -> list[TaskRun]:
    return [_run(device, n, True) for n in range(3)]


def _mapped(outcome: Any) -> tuple[str, str | None]:
    final = outcome.final_state()
    mapped = job_status(final.type.value, final.name, started=True)
    return mapped.status.value, mapped.reason.value if mapped.reason else None


def test_every_step_of_every_shard_ok_is_completed() -> None:
    runs = _all_ok("a") + _all_ok("b") + _all_ok("c")
    assert _mapped(outcome_from_shards(["a", "b", "c"], runs, [], 3)) == ("Completed", None)


def test_non_critical_failure_in_one_shard_is_completed_with_errors() -> None:
    runs = _all_ok("a") + [_run("b", 0, True), _run("b", 1, False), _run("b", 2, True)]
    outcome = outcome_from_shards(["a", "b"], runs, [], 3)
    assert _mapped(outcome) == ("Completed with errors", None)
    assert [d.ok for d in outcome.devices] == [True, False]
    assert not outcome.devices[1].critical_failure


def test_critical_failure_on_every_device_is_error_and_timed_out_keeps_its_reason() -> None:
    runs = [_run("a", 0, False), _run("b", 0, False)]
    assert _mapped(outcome_from_shards(["a", "b"], runs, [], 3)) == ("Error", "failed")
    runs = [_run("a", 0, False, name="TimedOut"), _run("b", 0, False)]
    assert _mapped(outcome_from_shards(["a", "b"], runs, [], 3)) == ("Error", "timed out")


def test_devices_of_a_lost_shard_are_error_and_the_job_completed_with_errors() -> None:
    # Shard 1 (a, b) ended; shard 2 (c, d) was lost: c had finished one step, d none.
    runs = _all_ok("a") + _all_ok("b") + [_run("c", 0, True)]
    outcome = outcome_from_shards(["a", "b", "c", "d"], runs, ["c", "d"], 3)
    assert _mapped(outcome) == ("Completed with errors", None)
    by = {d.device: d for d in outcome.devices}
    assert by["c"].critical_failure and by["d"].critical_failure
    assert by["a"].ok and by["b"].ok


def test_a_device_that_finished_in_a_lost_shard_keeps_its_result() -> None:
    runs = _all_ok("a") + _all_ok("b")
    outcome = outcome_from_shards(["a", "b"], runs, ["b"], 3)  # b was done before the loss
    assert _mapped(outcome) == ("Completed", None)


def test_every_shard_lost_is_error() -> None:
    outcome = outcome_from_shards(["a", "b"], [], ["a", "b"], 3)
    assert _mapped(outcome) == ("Error", "failed")


def test_a_step_cut_off_unfinished_counts_as_critical() -> None:
    # A step the job set Crashed when its shard was lost has no "step N of M" message.
    cut = TaskRun(
        name=step_task_name("check", "a"),
        flow_run_id=uuid4(),
        task_key="run_step",
        dynamic_key="a-1",
        state=Failed(name="Crashed", message="shard lost"),
    )
    outcome = outcome_from_shards(["a", "b"], [_run("a", 0, True), cut, *_all_ok("b")], [], 3)
    assert outcome.devices[0].critical_failure
    assert _mapped(outcome) == ("Completed with errors", None)
