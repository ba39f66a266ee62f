"""A job outlives a restart of its Prefect server: the executor waits for the API.

Prefect's client retries a failed request 5 times (2 + 4 + … + 32 s, about a minute), and
only once the client has connected before; its log worker then drops the batch with a
line on stderr. A managed server that is restarted (a crash, ``kill -9``, a reboot of the
service) takes longer than that to answer again on a loaded machine, so a job whose
steps all succeeded used to lose its log lines, fail to record its final state, and stay
"In progress" until the watchdog called it Error.

:func:`install` (the executor calls it first) changes three things in its own process:

* **Every API call waits out an outage.** A request that fails because the server does
  not answer (connect refused, connection dropped) or answers "not now" (408, 429, 502,
  503) is tried again — 1, 2, 4, then every 5 s — for up to :func:`outage_limit`
  seconds (``WSJOBS_API_RETRY_TIMEOUT``, default 600) counted from the first failure of
  this outage (one clock for the whole process, so a job that makes many calls still
  gives up after that time, not after N times it). Any other answer is the server's and
  is not retried. Prefect's own retries are turned off in the executor
  (``PREFECT_CLIENT_MAX_RETRIES=0`` unless set) since these replace them.
* **Log lines are buffered, not dropped.** While a batch waits, new lines queue behind it
  in memory and are delivered in order once the server answers.
* **A loss is marked.** A batch that could not be delivered within the limit is counted;
  the next batch that gets through is preceded by one WARNING line in the job's log:
  "N log line(s) written between T1 and T2 were lost: …".
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx

#: Default of ``WSJOBS_API_RETRY_TIMEOUT``: seconds an executor waits for the API.
DEFAULT_OUTAGE_LIMIT = 600.0
#: Errors meaning "the server did not answer"; anything else is the server's answer.
UNANSWERED = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.PoolTimeout,
)


def outage_limit() -> float:
    """``WSJOBS_API_RETRY_TIMEOUT`` seconds (default 600); a bad value is the default."""
    raw = os.environ.get("WSJOBS_API_RETRY_TIMEOUT", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_OUTAGE_LIMIT
    return value if 0 <= value <= 86_400 else DEFAULT_OUTAGE_LIMIT


class Outage:
    """The process's view of the API: since when it has not answered (None: it answers)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.since: float | None = None
        self._lock = threading.Lock()

    def failed(self) -> float:
        """Note a failure; return the seconds this outage has lasted."""
        with self._lock:
            now = self.clock()
            if self.since is None:
                self.since = now
            return now - self.since

    def answered(self) -> None:
        self.since = None

    @staticmethod
    def delay(attempt: int) -> float:
        return min(2.0**attempt, 5.0)


OUTAGE = Outage()


#: Answers that mean "not now" (Prefect's own retry codes): waited out like an outage.
BUSY = {408, 429, 502, 503}


def _unanswered(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        # Prefect's client has already fetched a new CSRF token into the request; with its
        # own retries off, sending it again is this loop's job.
        return code in BUSY or (code == 403 and "Invalid CSRF token" in exc.response.text)
    return isinstance(exc, UNANSWERED)


def _give_up(exc: BaseException) -> bool:
    """True when ``exc`` is not an outage or the outage has lasted too long."""
    return not _unanswered(exc) or OUTAGE.failed() > outage_limit()


def _async_send(original: Any) -> Any:
    async def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = await original(self, request, *args, **kwargs)
            except Exception as exc:
                if _give_up(exc):
                    raise
                await anyio.sleep(Outage.delay(attempt))
                attempt += 1
                continue
            OUTAGE.answered()
            return response

    return send


def _sync_send(original: Any) -> Any:
    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = original(self, request, *args, **kwargs)
            except Exception as exc:
                if _give_up(exc):
                    raise
                time.sleep(Outage.delay(attempt))
                attempt += 1
                continue
            OUTAGE.answered()
            return response

    return send


class LostLines:
    """Log lines that could not be delivered, until the marker line saying so is sent."""

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None
        self.last: str | None = None
        self.flow_run_id: str | None = None

    def add(self, items: list[bytes]) -> None:
        for item in items:
            try:
                record = json.loads(item)
            except ValueError:
                continue
            stamp = str(record.get("timestamp") or "")
            self.first = min(filter(None, (self.first, stamp)), default=None)
            self.last = max(filter(None, (self.last, stamp)), default=None)
            self.flow_run_id = self.flow_run_id or record.get("flow_run_id")
        self.count += len(items)

    def marker(self) -> bytes | None:
        """The WARNING log record that tells the job's log about the gap, if there is one."""
        if not self.count or not self.flow_run_id:
            return None
        record = {
            "name": "workspaces_jobs.executor",
            "level": 30,
            "message": (
                f"{self.count} log line(s) written between {_hms(self.first)} and "
                f"{_hms(self.last)} UTC were lost: the Prefect API did not answer for longer "
                f"than WSJOBS_API_RETRY_TIMEOUT ({outage_limit():g} s)"
            ),
            "timestamp": self.first or datetime.now(UTC).isoformat(),
            "flow_run_id": self.flow_run_id,
            "task_run_id": None,
        }
        return json.dumps(record).encode()

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]


def _hms(stamp: str | None) -> str:
    try:
        return datetime.fromisoformat(str(stamp)).astimezone(UTC).strftime("%H:%M:%S")
    except ValueError:
        return "?"


LOST = LostLines()


async def _handle_log_batch(self: Any, items: list[bytes]) -> None:
    """``APILogWorker._handle_batch`` that marks what it could not deliver."""
    marker = LOST.marker()
    batch = ([marker] if marker else []) + items
    try:
        await self._client.request(
            "POST",
            "/logs/",
            content=b"[" + b",".join(batch) + b"]",
            headers={"Content-Type": "application/json"},
        )
    except Exception as exc:
        LOST.add(items)
        sys.stderr.write(f"--- {len(items)} log line(s) not delivered to the API: {exc}\n")
        return
    if marker:
        LOST.clear()


_installed = False


def install() -> None:
    """Make this process's Prefect clients and log worker wait out an API outage."""
    global _installed
    if _installed:
        return
    # These retries replace Prefect's (2 + 4 + … + 32 s, only once connected), so the
    # limit counts from the first failure and a returning server is noticed within 5 s.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "0")
    from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient
    from prefect.context import refresh_global_settings_context
    from prefect.logging.handlers import APILogWorker

    refresh_global_settings_context()

    PrefectHttpxAsyncClient.send = _async_send(PrefectHttpxAsyncClient.send)  # type: ignore[method-assign]
    PrefectHttpxSyncClient.send = _sync_send(PrefectHttpxSyncClient.send)  # type: ignore[method-assign]
    APILogWorker._handle_batch = _handle_log_batch  # type: ignore[method-assign]
    _installed = True
