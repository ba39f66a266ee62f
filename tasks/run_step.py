"""The step task: one script on one device, output streamed into the task run's logs.

Each output line becomes one log record of this task run (so it shows under the task
in the Prefect UI and in ``read_logs``), tagged ``<device> <step> <stream>``. The task
ends Completed for exit code 0 and Failed otherwise, with ``exit code N`` in the state
message; it returns the state instead of raising so that an expected script failure
does not print a Python traceback into the job's logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import task_run as runtime_task_run
from prefect.states import Completed, Failed, State
from prefect.utilities.annotations import quote

from workspaces_jobs.catalog import Device, Step
from workspaces_jobs.flows.inactivity import touch
from workspaces_jobs.runmeta import (
    STREAM_ERR,
    STREAM_SYS,
    log_message,
    step_message,
    step_task_name,
)
from workspaces_jobs.tasks.lines import masker_for
from workspaces_jobs.tasks.transports import transport_for

#: Words in a step's message when it was stopped for staying silent (see :func:`silenced`).
SILENCED = "inactivity hard limit"


def _task_run_name() -> str:
    params = runtime_task_run.parameters
    step, device = (unquote(params[k]) for k in ("step", "device"))
    return step_task_name(step.name, device.name)


def unquote(value: Any) -> Any:
    """Parameters may arrive wrapped in Prefect's ``quote`` (see flows/fanout.py)."""
    return value.unquote() if isinstance(value, quote) else value


@task(
    name="step",
    task_run_name=_task_run_name,
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=0,
)
def run_step(
    device: Device,
    step: Step,
    script: str,
    env: Mapping[str, str],
    position: int,
    total: int,
    hard_limit: float | None = None,
) -> State[int]:
    """Run ``script`` (already rendered) for ``step`` (``position`` of ``total``) on ``device``.

    ``hard_limit``: seconds without output after which the step is stopped (the job
    itself was marked Error (inactivity) long before, see ``flows/inactivity.py``).
    """
    logger = get_run_logger()
    job_id = env.get("WSJOBS_JOB_ID", "")
    mask = masker_for(job_id)  # secrets become *** before a line leaves this process

    def on_line(stream: str, text: str) -> None:
        touch(job_id)
        level = logging.WARNING if stream == STREAM_ERR else logging.INFO
        logger.log(level, log_message(device.name, step.name, stream, mask(text)))

    started = time.monotonic()
    result = transport_for(device).run(
        device,
        script=script,
        shell=step.shell,
        env=env,
        on_line=on_line,
        timeout=step.timeout,
        inactivity=hard_limit,
    )
    took = time.monotonic() - started
    if result.error:
        detail = result.error
    elif result.timed_out:
        detail = f"timed out after {step.timeout:g} s; its processes were stopped"
    elif result.inactive:
        detail = f"no output for {hard_limit:g} s ({SILENCED}); its processes were stopped"
    else:
        detail = f"finished in {took:.2f} s"
    message = step_message(
        result.exit_code, position=position, total=total, critical=step.critical, detail=detail
    )
    if result.exit_code == 0 and not (result.timed_out or result.inactive or result.error):
        return Completed(message=message, data=0)
    logger.error(log_message(device.name, step.name, STREAM_SYS, message))
    name = "TimedOut" if (result.inactive or result.timed_out) else "Failed"
    return Failed(name=name, message=message, data=result.exit_code)


def silenced(state: State[Any]) -> bool:
    """The step was stopped at the inactivity hard limit (a TimedOut step saying so)."""
    return state.name == "TimedOut" and SILENCED in (state.message or "")
