"""Jobs end to end: real executor processes, real subprocess steps, read back via the API."""

from __future__ import annotations

import uuid

import pytest
from jobhelpers import run, step_lines
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterId,
)

from workspaces_jobs.catalog import CatalogError
from workspaces_jobs.jobs import submit_job
from workspaces_jobs.tasks.lines import SPLIT_MARKER

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server


def test_all_steps_ok_is_completed() -> None:
    job = run("ok", info="say hello", owner="alice")
    assert (job.status, job.reason, job.progress) == ("Completed", None, 100.0)
    assert (job.action, job.info, job.owner) == ("ok", "say hello", "alice")
    assert {d.device: d.status for d in job.devices} == {
        "t1": "Completed",
        "t2": "Completed",
        "t3": "Completed",
    }
    assert len(job.steps) == 6 and all(s.exit_code == 0 for s in job.steps)
    assert step_lines(job, "t2", "first") == ["hello from t2", "to stderr"]
    err = [line for line in job.logs if line.device == "t2" and line.stream == "err"]
    assert err and err[0].level == "WARNING" and err[0].step_id is not None
    assert job.started and job.ended and job.created


def test_non_critical_failure_is_completed_with_errors() -> None:
    job = run("mixed")
    assert job.status == "Completed with errors"
    # visible as such through the API: a COMPLETED-type state with that name
    assert (job.prefect_state_type, job.prefect_state_name) == (
        "COMPLETED",
        "Completed with errors",
    )
    assert "t3: check" in (job.state_message or "")
    devices = {d.device: (d.status, d.steps_ok, d.steps_failed) for d in job.devices}
    assert devices == {
        "t1": ("Completed", 3, 0),
        "t2": ("Completed", 3, 0),
        "t3": ("Completed with errors", 2, 1),
    }
    failed = [s for s in job.steps if s.device == "t3" and s.step == "check"][0]
    assert (failed.status, failed.exit_code) == ("Failed", 3)
    assert step_lines(job, "t3", "finish") == ["finished"]  # non-critical: the device went on


def test_critical_failure_everywhere_is_error() -> None:
    job = run("broken", target=["tag:alpha"])
    assert (job.status, job.reason) == ("Error", "failed")
    assert {d.device: d.status for d in job.devices} == {"t1": "Error", "t2": "Error"}
    assert [s.step for s in job.steps if s.device == "t1"] == ["boom"]  # "never" never ran
    assert all(s.exit_code == 7 for s in job.steps)
    assert job.progress == 100.0
    assert not any("must not run" in line.message for line in job.logs)


def test_progress_artifact_reaches_100() -> None:
    job = run("ok", target=["t1"])
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(job.id)])),
        )
    assert [a.data for a in artifacts] == [100.0]


def test_shell_injection_parameter_arrives_literally(tmp_path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker}); rm -rf x `touch {marker}` \"' ; echo done"
    job = run("inject", target=["t1"], params={"value": hostile})
    assert job.status == "Completed"
    assert step_lines(job, "t1", "env") == [f"env={hostile}"]
    assert step_lines(job, "t1", "template") == [f"tpl={hostile}"]
    assert not marker.exists()


def test_non_utf8_and_one_megabyte_line() -> None:
    job = run("weird-output", target=["t1"])
    assert job.status == "Completed"
    assert step_lines(job, "t1", "binary") == ["bad \ufffd\ufffd bytes"]
    pieces = step_lines(job, "t1", "longline")
    assert len(pieces) > 1 and all(p.endswith(SPLIT_MARKER) for p in pieces[:-1])
    assert sum(len(p.removesuffix(SPLIT_MARKER)) for p in pieces) == 1_000_000


def test_step_timeout_kills_and_fails() -> None:
    job = run("timeout", target=["t1"])
    assert job.status == "Error"
    step = job.steps[0]
    assert step.status == "Failed" and "timed out after 1 s" in (step.message or "")


@pytest.mark.parametrize(
    ("action", "kwargs", "message"),
    [
        ("nope", {"target": ["t1"]}, "unknown action 'nope'"),
        ("ok", {"target": ["zz9"]}, "unknown device 'zz9'"),
        ("inject", {"target": ["t1"], "params": {"bogus": "1"}}, "unknown parameter 'bogus'"),
        ("inject", {"target": ["t1"]}, "needs parameter 'value'"),
    ],
)
def test_bad_input_fails_before_a_job_exists(action, kwargs, message) -> None:
    with get_client(sync_client=True) as client:
        before = client.count_flow_runs() if hasattr(client, "count_flow_runs") else None
        with pytest.raises(CatalogError, match=message):
            submit_job(action, **kwargs)
        if before is not None:
            assert client.count_flow_runs() == before
