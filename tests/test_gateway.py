"""The executor's patience with the API, piece by piece (the kill -9 tests in test_server.py
show it end to end): which failures are waited out, for how long, and the gap marker."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from workspaces_jobs import gateway


@pytest.mark.parametrize(
    ("raw", "limit"),
    [("", 600.0), ("30", 30.0), ("0", 0.0), ("abc", 600.0), ("-1", 600.0), ("1e9", 600.0)],
)
def test_outage_limit_is_bounded(monkeypatch: pytest.MonkeyPatch, raw: str, limit: float) -> None:
    monkeypatch.setenv("WSJOBS_API_RETRY_TIMEOUT", raw)
    assert gateway.outage_limit() == limit


def test_one_outage_clock_for_the_whole_process() -> None:
    now = [100.0]
    outage = gateway.Outage(clock=lambda: now[0])
    assert outage.failed() == 0.0
    now[0] = 103.0
    assert outage.failed() == 3.0  # a second call in the same outage: counted from the first
    outage.answered()
    now[0] = 200.0
    assert outage.failed() == 0.0  # a new outage
    assert [outage.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def _status_error(code: int, text: str = "") -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:1/api/logs/")
    response = httpx.Response(code, text=text, request=request)
    return httpx.HTTPStatusError("x", request=request, response=response)


def test_only_unanswered_or_busy_requests_are_waited_out() -> None:
    request = httpx.Request("GET", "http://127.0.0.1:1/api/health")
    assert gateway._unanswered(httpx.ConnectError("refused", request=request))
    assert gateway._unanswered(httpx.RemoteProtocolError("dropped", request=request))
    assert gateway._unanswered(_status_error(503))
    assert gateway._unanswered(_status_error(403, '{"detail":"Invalid CSRF token"}'))
    assert not gateway._unanswered(_status_error(403, "Forbidden"))
    assert not gateway._unanswered(_status_error(401))
    assert not gateway._unanswered(_status_error(422))
    assert not gateway._unanswered(ValueError("a bug"))


def test_a_wrapped_call_retries_then_gives_up_after_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr(gateway, "OUTAGE", gateway.Outage(clock=lambda: now[0]))
    monkeypatch.setattr(gateway.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    monkeypatch.setenv("WSJOBS_API_RETRY_TIMEOUT", "10")
    request = httpx.Request("GET", "http://127.0.0.1:1/api/health")
    calls: list[float] = []

    def down_then_up(self: Any, req: Any) -> str:
        calls.append(now[0])
        if len(calls) < 4:
            raise httpx.ConnectError("refused", request=req)
        return "answer"

    send = gateway._sync_send(down_then_up)
    assert send(None, request) == "answer"
    assert calls == [0.0, 1.0, 3.0, 7.0]  # 1, 2, 4 s apart
    assert gateway.OUTAGE.since is None  # it answered: the outage is over

    def always_down(self: Any, req: Any) -> str:
        calls.append(now[0])
        raise httpx.ConnectError("refused", request=req)

    calls.clear()
    with pytest.raises(httpx.ConnectError):
        gateway._sync_send(always_down)(None, request)
    assert calls[-1] - calls[0] <= 10 + 5  # gave up within the limit (+ one last delay)
    assert len(calls) == 5  # 0, 1, 3, 7, 12: then 12 s > 10 s


def test_the_gap_marker_counts_and_dates_the_lost_lines() -> None:
    lost = gateway.LostLines()
    assert lost.marker() is None
    run = "2b0e7c8a-6f3e-4f7e-9d43-6a1f0b9e2f11"
    items = [
        json.dumps(
            {
                "message": f"line {i}",
                "timestamp": f"2026-11-30T21:5{i}:00+00:00",
                "flow_run_id": run,
            }
        ).encode()
        for i in (3, 1, 2)
    ]
    lost.add(items)
    lost.add([b"not json"])
    marker = json.loads(lost.marker() or b"{}")
    assert marker["flow_run_id"] == run and marker["level"] == 30
    assert marker["timestamp"] == "2026-11-30T21:51:00+00:00"  # where the gap starts
    assert marker["message"].startswith(
        "4 log line(s) written between 21:51:00 and 21:53:00 UTC were lost"
    )
    lost.clear()
    assert lost.marker() is None
