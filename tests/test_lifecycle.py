"""Job lifecycle rules against the real API with real executor and step processes:
cancel (Pending only), kill, inactivity (Error at once, recovery, hard limit, watchdog),
crash, rerun, the job-level hard timeout, and a late completion after a forced Inactivity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from uuid import UUID

import pytest
from jobhelpers import read_logs_settled, run
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
from prefect.states import Failed, Pending

from workspaces_jobs.flows.watchdog import sweep
from workspaces_jobs.jobs import job_state, read_job, start_executor, submit_job, wait_job
from workspaces_jobs.lifecycle import LifecycleError, cancel_job, kill_job, rerun_job
from workspaces_jobs.tasks.transports.local import job_processes

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server


def wsjobs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def until(check: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def messages(job_id: str) -> list[str]:
    return [line.message for line in read_job(job_id).logs]


def task_run_count(job_id: str) -> int:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[UUID(job_id)]))
        )
    return len(runs)


def run_count(job_id: str) -> int:
    """How many times the run entered Running (Prefect sets start_time on any final state)."""
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(job_id)).run_count


# --- cancel ---------------------------------------------------------------------------


def test_cancel_pending_job_records_canceler_and_never_runs() -> None:
    job_id = submit_job("ok", target=["t1"], start=False)
    result = cancel_job(job_id, by="carol")
    assert (result.status, result.message) == ("Canceled by the user", "canceled by carol")
    # its executor starts late: it must not run the canceled job
    proc = start_executor(job_id)
    assert proc.wait(timeout=60) == 0
    job = read_job(job_id)
    assert (job.status, job.canceled_by) == ("Canceled by the user", "carol")
    assert task_run_count(job_id) == 0 and run_count(job_id) == 0
    lines = [line.message for line in job.logs]
    assert "Job canceled by carol while Pending; it never ran." in lines
    assert any(m.startswith("Job status: Canceled by the user") for m in lines)


def test_cancel_after_executor_claim_is_not_run() -> None:
    """The race: an executor claimed the run (Prefect Pending) but has not started it yet.
    Prefect accepts Cancelled → Running for ad-hoc runs, so cancel proposes Cancelling,
    from which the server refuses Running; the executor then ends the run Cancelled."""
    job_id = submit_job("ok", target=["t1"], start=False)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(job_id), Pending(message="claimed"))
    result = cancel_job(job_id, by="dave", settle=0.5)
    assert result.status == "In progress"  # Cancelling: its executor finishes the cancel
    # the executor that claimed it goes on to start it, as in the race
    code = "import sys; from workspaces_jobs.executor import run_claimed; "
    code += "sys.exit(run_claimed(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", code, job_id], env=dict(os.environ))
    assert proc.wait(timeout=60) == 3
    job = read_job(job_id)
    assert (job.status, job.canceled_by) == ("Canceled by the user", "dave")
    assert task_run_count(job_id) == 0 and run_count(job_id) == 0


@pytest.mark.slow
def test_cancel_refuses_running_and_finished_jobs_cli() -> None:
    done = run("ok", target=["t1"])
    running = submit_job("slow", target=["t1"], params={"seconds": "60"})
    until(lambda: job_state(running)[0].value == "In progress", what="slow job running")
    pending = submit_job("ok", target=["t1"], start=False)
    out = wsjobs("cancel", done.id, running, pending, "--by", "erin")
    assert out.returncode == 1
    assert f"job {done.id} is Completed: only a Pending job can be canceled" in out.stderr
    assert f"job {running} is In progress: only a Pending job can be canceled" in out.stderr
    assert f"{pending}: Canceled by the user (canceled by erin)" in out.stdout
    # nothing changed for the refused ones
    assert read_job(done.id, with_logs=False).canceled_by is None
    assert job_state(running)[0].value == "In progress"
    assert read_job(running, with_logs=False).canceled_by is None
    kill_job(running, by="cleanup")  # don't leave it running


# --- kill ------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_running_job_stops_step_processes() -> None:
    job_id = submit_job("slow", target=["t1", "t2"], params={"seconds": "30"})
    pids = until(lambda: len(job_processes(job_id)) >= 2 and job_processes(job_id), what="steps")
    assert isinstance(pids, list)
    with pytest.raises(LifecycleError, match="only a Pending job can be canceled"):
        cancel_job(job_id)
    out = wsjobs("kill", job_id, "--by", "frank", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "Canceled by the user"
    assert not [pid for pid in pids if alive(pid)]
    assert job_processes(job_id) == []
    job = read_logs_settled(job_id)
    assert (job.status, job.canceled_by) == ("Canceled by the user", "frank")
    lines = [line.message for line in job.logs]
    assert any(m.startswith("Job status: Canceled by the user") for m in lines)  # the hook ran
    assert not any(m == "woke" for m in lines)
    with pytest.raises(LifecycleError, match="is Canceled by the user: only an In progress"):
        kill_job(job_id)


# --- inactivity --------------------------------------------------------------------------


def status_reason(job_id: str) -> tuple[str, str | None]:
    job = read_job(job_id, with_logs=False)
    return job.status, job.reason


def state_names(job_id: str) -> list[str]:
    with get_client(sync_client=True) as client:
        return [s.name or "" for s in client.read_flow_run_states(UUID(job_id))]


def test_silent_step_is_error_at_once_then_stopped_at_the_hard_limit() -> None:
    job_id = submit_job("silent", target=["t1"])
    # The Error (inactivity) lasts 5 s before the hard limit: a loaded machine may poll past
    # it, so look for it in the run's state history, which keeps it (bounded wait).
    until(lambda: "Inactivity" in state_names(job_id), timeout=120, what="Error (inactivity)")
    job = until(
        lambda: (j := read_job(job_id)).prefect_state_name == "TimedOut" and j,
        timeout=60,
        what="the hard limit",
    )
    assert (job.status, job.reason, job.recovered) == ("Error", "timed out", False)  # type: ignore[attr-defined]
    pid = int(next(m for m in messages(job_id) if m.startswith("pid "))[4:])
    until(lambda: not alive(pid), timeout=10, what="step stopped")
    assert job_processes(job_id) == []
    step = read_job(job_id).steps[0]
    assert step.state_name == "TimedOut"
    assert "no output for 6 s (inactivity hard limit)" in (step.message or "")
    with get_client(sync_client=True) as client:
        history = client.read_flow_run_states(UUID(job_id))
    assert [s.name for s in history][-2:] == ["Inactivity", "TimedOut"]
    # The Error stopped nothing: the step ran on until its hard limit, long after.
    assert step.ended is not None and step.started is not None
    assert (step.ended - history[-2].timestamp).total_seconds() > 2
    assert (step.ended - step.started).total_seconds() >= 6
    # The final hook's line is sent after the final state: wait for it, bounded.
    lines = until(
        lambda: (
            (ms := messages(job_id))
            and any(m.startswith("Job status: Error (timed out)") for m in ms)
            and ms
        ),
        what="the timed-out status line",
    )
    assert sum(m.startswith("Job status: Error (inactivity)") for m in lines) == 1  # type: ignore[union-attr]


def test_quiet_job_is_error_then_recovers_with_its_real_end_time() -> None:
    job_id = submit_job("quiet-then-done", target=["t1"], params={"quiet": "4"})
    until(lambda: status_reason(job_id)[0] == "Completed", timeout=60, what="completion")
    job = read_logs_settled(job_id)
    assert (job.status, job.reason, job.recovered) == ("Completed", None, True)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(job_id))
        history = client.read_flow_run_states(UUID(job_id))
    assert [s.name for s in history][-2:] == ["Inactivity", "Completed"]
    marked_at = history[-2].timestamp
    back = next(line.ts for line in job.logs if line.message == "back again")
    assert marked_at < back  # Error while the step was still quiet, not after it
    assert job.ended == history[-1].timestamp  # the real end, not the Error's
    assert job.ended > back and run.end_time == marked_at  # Prefect keeps the first end
    assert job.started is not None and (job.ended - job.started).total_seconds() >= 4
    assert [s.status for s in job.steps] == ["Completed", "Completed"]
    lines = [line.message for line in job.logs]
    assert "second step ran" in lines
    assert sum(m.startswith("Job status: Error (inactivity)") for m in lines) == 1
    assert any(m.startswith("late completion: the job was marked Error") for m in lines)


@pytest.mark.slow
def test_sigkilled_executor_is_marked_error_by_watchdog() -> None:
    job_id = submit_job("ticking", target=["t1"], start=False)
    executor = start_executor(job_id)
    until(lambda: any(m.startswith("tick ") for m in messages(job_id)), what="first ticks")
    executor.send_signal(signal.SIGKILL)
    executor.wait(timeout=10)
    before = [m for m in messages(job_id) if m.startswith("tick ")]
    assert job_state(job_id)[0].value == "In progress"  # nothing in the job noticed
    # Scoped to this job: a job another test left silent may be marked in the same pass.
    marked = until(
        lambda: [a for a in sweep(grace=0.5) if a.job_id == job_id],
        timeout=30,
        what="watchdog mark",
    )
    assert [a.job_id for a in marked] == [job_id]  # type: ignore[attr-defined]
    job = read_job(job_id)
    assert (job.status, job.reason) == ("Error", "inactivity")
    assert [s.status for s in job.steps] == ["Crashed"]  # left Running by the dead process
    assert [d.status for d in job.devices] == ["Error"]
    lines = [line.message for line in job.logs]
    assert before and set(before) <= set(lines)  # every line the API had is still there
    assert any(m.startswith("watchdog: no log line or state change") for m in lines)
    assert any(m.startswith("Job status: Error (inactivity)") for m in lines)
    until(lambda: job_processes(job_id) == [], timeout=10, what="no leftover step")
    # Idempotent: a marked job is not In progress.
    assert job_id not in [a.job_id for a in sweep(grace=0.5)]


@pytest.mark.slow
def test_late_completion_after_forced_inactivity_wins() -> None:
    job_id = submit_job("ticking", target=["t1"], params={"ticks": "15"})
    until(lambda: job_state(job_id)[0].value == "In progress", what="running")
    with get_client(sync_client=True) as client:  # what the watchdog does to a frozen job
        client.set_flow_run_state(UUID(job_id), Failed(name="Inactivity"), force=True)
        assert wait_job(job_id, timeout=5).value == "Error"
        until(lambda: job_state(job_id)[0].value == "Completed", timeout=30, what="late completion")
        history = [s.name for s in client.read_flow_run_states(UUID(job_id))]
    assert history[-2:] == ["Inactivity", "Completed"]
    job = read_logs_settled(job_id)
    assert any(
        line.message.startswith("late completion: the job was marked Error") for line in job.logs
    )


# --- rerun and hard timeout -------------------------------------------------------------------


@pytest.mark.slow
def test_rerun_failed_only_targets_exactly_failed_devices() -> None:
    first = run("mixed", params={}, info="rerun me", owner="gina")
    assert first.status == "Completed with errors"
    again = rerun_job(first.id, failed_only=True)
    assert again.target == ["t3"]
    wait_job(again.job_id, timeout=60)
    job = read_job(again.job_id, with_logs=False)
    assert (job.rerun_of, job.action, job.info) == (first.id, "mixed", "rerun me")
    assert [d.device for d in job.devices] == ["t3"]
    full = wsjobs("rerun", first.id, "--json")
    assert full.returncode == 0, full.stderr
    data = json.loads(full.stdout)
    assert (data["rerun_of"], data["target"]) == (first.id, ["all"])
    wait_job(data["id"], timeout=60)
    ok = run("ok", target=["t1"])
    with pytest.raises(LifecycleError, match="has no failed devices"):
        rerun_job(ok.id, failed_only=True)


def test_job_level_hard_timeout_is_error_timed_out() -> None:
    job = run("job-timeout", target=["t1"])
    assert (job.status, job.reason) == ("Error", "timed out")
    pid = int(next(line.message for line in job.logs if line.message.startswith("pid "))[4:])
    assert not alive(pid)


@pytest.mark.slow
def test_watchdog_leaves_live_jobs_alone_cli_and_flow() -> None:
    from workspaces_jobs.flows.watchdog import watchdog

    # 3000 ticks of 0.2 s: ten minutes of output, far longer than the checks below, so the
    # watchdog meets the job while it runs (a short job could end before the watchdog
    # looked, and "left alone" would pass without testing anything).
    job_id = submit_job("ticking", target=["t1"], params={"ticks": "3000"})
    until(lambda: job_state(job_id)[0].value == "In progress", what="running")
    started = time.monotonic()
    # Longer than its 2 s inactivity timeout, but it keeps printing.
    until(lambda: time.monotonic() - started > 2.5 and len(messages(job_id)) > 5, what="ticks")
    out = wsjobs("watchdog", "--once", "--grace", "0", "--json")
    assert out.returncode == 0, out.stderr
    assert job_id not in [item["job_id"] for item in json.loads(out.stdout)]
    assert job_state(job_id)[0].value == "In progress"  # the CLI pass saw it live
    assert job_id not in [item["job_id"] for item in watchdog(grace=0.0)]  # as a Prefect flow
    assert job_state(job_id)[0].value == "In progress"  # and so did the flow
    kill_job(job_id, by="cleanup")
    assert wait_job(job_id, timeout=60).value == "Canceled by the user"


def test_step_hard_timeout_everywhere_is_error_timed_out() -> None:
    job = run("timeout", target=["t1"])
    assert (job.status, job.reason, job.prefect_state_name) == ("Error", "timed out", "TimedOut")
    assert job.steps[0].state_name == "TimedOut"
