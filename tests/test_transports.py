"""One contract, every transport: the same tests run against ``local`` and against ``ssh``
(a real OpenSSH server on 127.0.0.1, tests/sshd.py). No Prefect server: a transport is
called as the step task calls it, through a registry of its own.

A new transport is added to :data:`TRANSPORTS` below (and to the registry); it passes when
it keeps the contract of :class:`workspaces_jobs.tasks.transports.Transport`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sshd

from workspaces_jobs.catalog import Device
from workspaces_jobs.runmeta import STREAM_ERR, STREAM_OUT
from workspaces_jobs.tasks import transports
from workspaces_jobs.tasks.transports import STOPPED_EXIT_CODE, Registry, StepResult, Transport

TRANSPORTS = ["local", "ssh"]
#: Bounded waits (a loaded machine is slow, never this slow).
WAIT = 60.0


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshd.Sshd]:
    reason = sshd.unavailable_reason()
    if reason:
        pytest.fail(reason)  # never a skip: a green run without sshd would test nothing SSH
    server = sshd.start(tmp_path_factory.mktemp("sshd-contract"))
    yield server
    server.stop()


@dataclass
class Case:
    transport: Transport
    device: Device
    registry: Registry


@pytest.fixture(params=TRANSPORTS)
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    name = request.param
    if name == "ssh":
        server: sshd.Sshd = request.getfixturevalue("ssh_server")
        device = Device(
            name="contract-ssh",
            transport="ssh",
            host="127.0.0.1",
            port=server.port,
            user=server.user,
            key_file=str(server.client_key),
            known_hosts=str(server.known_hosts),
        )
    else:
        device = Device(name="contract-local", transport="local")
    registry = Registry(transports.TRANSPORTS.factories)  # a process's worth, fresh per test
    transport = registry.get(name)
    yield Case(transport, device, registry)
    registry.open()
    registry.terminate()
    registry.close(JOB)


JOB = "contract-job"


def _run(case: Case, script: str, **kw: object) -> tuple[StepResult, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    env = {"WSJOBS_JOB_ID": JOB, **kw.pop("env", {})}  # type: ignore[dict-item]
    result = case.transport.run(
        case.device,
        script=script,
        shell="/bin/sh",
        env=env,
        on_line=lambda stream, text: lines.append((stream, text)),
        timeout=kw.pop("timeout", None),  # type: ignore[arg-type]
        inactivity=kw.pop("inactivity", None),  # type: ignore[arg-type]
    )
    return result, lines


def test_registry_makes_one_transport_per_name() -> None:
    registry = Registry(transports.TRANSPORTS.factories)
    assert registry.get("local") is registry.get("local")
    assert registry.made() == [registry.get("local")]  # ssh not made: asyncssh not needed
    with pytest.raises(ValueError, match="unknown transport 'telnet'"):
        registry.get("telnet")


def test_exit_code_streams_and_a_partial_last_line(case: Case) -> None:
    result, lines = _run(case, "echo a; echo b >&2; printf 'no newline'; exit 3")
    assert result == StepResult(exit_code=3)
    assert [t for s, t in lines if s == STREAM_OUT] == ["a", "no newline"]
    assert [t for s, t in lines if s == STREAM_ERR] == ["b"]


def test_parameters_are_values_never_shell_text(case: Case, tmp_path: Path) -> None:
    trap = tmp_path / "pwned"
    value = f"$(touch {trap}); `touch {trap}` 'quoted' \"double\"\nsecond line"
    result, lines = _run(case, 'printf "%s\\n" "$PARAM_X"', env={"PARAM_X": value})
    assert result.exit_code == 0
    assert [t for _, t in lines] == value.split("\n")
    assert not trap.exists()


def test_timeout_stops_the_step(case: Case) -> None:
    result, lines = _run(case, "echo one; sleep 60", timeout=1.0)
    assert result.timed_out and not result.inactive and result.exit_code != 0
    assert [t for _, t in lines] == ["one"]


def test_inactivity_stops_a_silent_step(case: Case) -> None:
    result, lines = _run(case, "echo one; sleep 60", inactivity=1.0)
    assert result.inactive and not result.timed_out and result.exit_code != 0
    assert [t for _, t in lines] == ["one"]


def test_terminate_stops_running_steps_refuses_new_ones_until_open(case: Case) -> None:
    started = threading.Event()
    results: list[StepResult] = []
    marker = uuid.uuid4().hex

    def step() -> None:
        def on_line(stream: str, text: str) -> None:
            if text == marker:
                started.set()

        results.append(
            case.transport.run(
                case.device,
                script=f"echo {marker}; sleep 300",
                shell="/bin/sh",
                env={"WSJOBS_JOB_ID": JOB},
                on_line=on_line,
                timeout=None,
                inactivity=None,
            )
        )

    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    assert started.wait(WAIT), "the step never started"
    assert case.registry.terminate(refuse_new=True) == 1
    thread.join(WAIT)
    assert not thread.is_alive()
    assert results[0].exit_code != 0 and results[0].error == "stopped: the job was stopped"

    refused, lines = _run(case, "echo must-not-run")
    assert refused.exit_code == STOPPED_EXIT_CODE and lines == []
    assert refused.error == "not started: the job is being stopped"

    case.registry.open()
    again, lines = _run(case, "echo runs-again")
    assert again == StepResult(exit_code=0) and lines == [(STREAM_OUT, "runs-again")]


def test_a_transport_made_while_stopping_refuses_too(case: Case) -> None:
    registry = Registry(transports.TRANSPORTS.factories)
    registry.terminate(refuse_new=True)  # the job is stopped before any step started
    late = Case(registry.get(case.device.transport), case.device, registry)
    refused, lines = _run(late, "echo must-not-run")
    assert refused.exit_code == STOPPED_EXIT_CODE and lines == []


def test_close_frees_the_job_and_the_next_step_still_runs(case: Case) -> None:
    first, _ = _run(case, "echo one")
    case.transport.close(JOB, case.device.name)  # the device is done in this job
    case.transport.close(JOB)  # the job is done
    second, lines = _run(case, "echo two")
    assert first.exit_code == second.exit_code == 0 and lines == [(STREAM_OUT, "two")]
