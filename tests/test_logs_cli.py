"""``wsjobs logs`` and ``wsjobs show``'s log tail, as a user runs them against the real server.

``logs --follow`` is started while a job prints and must end by itself when the job ends,
with every line once, in order, and the job's exit code; device output with escape
sequences never reaches the terminal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from jobhelpers import read_logs_settled

from workspaces_jobs.jobs import submit_job, wait_job

pytestmark = pytest.mark.usefixtures("prefect_server")  # real jobs on the session server


def wsjobs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def test_follow_prints_every_line_in_order_and_ends_with_the_job() -> None:
    job_id = submit_job("ticking", target=["t1"], params={"ticks": "20"})  # ~4 s of output
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workspaces_jobs.cli", "logs", job_id, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err  # the job ended Completed: exit code as `wsjobs run`
    assert wait_job(job_id, timeout=5).value == "Completed"
    ticks = [int(m.group(1)) for m in re.finditer(r" t1 tick out +tick (\d+)$", out, re.M)]
    assert ticks == list(range(1, 21)), out
    assert "Finished in state" in out  # waited for the job's closing line
    assert time.monotonic() - started < 90


def test_tail_device_step_and_level_select_lines() -> None:
    job_id = submit_job("colours", target=["t1", "t2"], params={"lines": "12"})
    wait_job(job_id, timeout=60)
    read_logs_settled(job_id)
    tail = wsjobs("logs", job_id, "--tail", "3", "--device", "t2", "--step", "paint")
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert len(lines) == 3 and all(" t2 paint " in line for line in lines), lines
    assert "line 11" in lines[0] and "line 12" in lines[1] and "bell" in lines[2]
    errors = wsjobs("logs", job_id, "--level", "warning", "--json")
    data = json.loads(errors.stdout)
    steps = [d for d in data if d["device"]]
    assert {(d["device"], d["step"]) for d in steps} == {("t1", "check"), ("t2", "check")}
    assert all(d["message"] == "\x1b[31mcheck failed\x1b[0m" for d in steps)  # JSON: as sent


def test_no_escape_sequence_reaches_the_terminal() -> None:
    job_id = submit_job("colours", target=["t1"])
    wait_job(job_id, timeout=60)
    read_logs_settled(job_id)
    for args in (("logs", job_id), ("show", job_id)):
        out = wsjobs(*args)
        assert out.returncode in (0, 2), out.stderr
        assert "line 1 green bold red <b>tag</b>" in out.stdout
        assert "title clear bell end" in out.stdout
        assert not any(c in out.stdout for c in "\x1b\x07\r"), repr(out.stdout[:400])


def test_show_prints_the_last_lines_of_each_step_and_says_how_to_get_the_rest() -> None:
    job_id = submit_job("colours", target=["t1"], params={"lines": "30"})
    wait_job(job_id, timeout=60)
    read_logs_settled(job_id)
    env_lines = "--lines"
    out = wsjobs("show", job_id, env_lines, "5")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # 30 lines, the title line and the step's closing line: the last 5 are 28..30 and two.
    assert f"27 earlier not shown (wsjobs logs {job_id} --device t1 --step paint)" in text, text
    assert "line 27 " not in text and "line 28 " in text and "line 30 " in text
    default = wsjobs("show", job_id).stdout
    assert "line 22 " not in default and "line 23 " in default  # 10 per step by default
    every = wsjobs("show", job_id, env_lines, "0").stdout
    assert all(f"line {i} " in every for i in range(1, 31))
