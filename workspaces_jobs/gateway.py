"""The one gateway to the Prefect API: job ids, "not found", and waiting out an outage.

Everything that talks to the Prefect API about a job goes through the rules here, once:

* **Job ids as users type them.** :func:`resolve_job_id` takes a full id or any unique
  prefix (a list shows the shortest unique prefix, :mod:`workspaces_jobs.ids`):

  - a full UUID is used as is (no lookup: the caller's read says if it does not exist);
  - a prefix is looked up in the history file (every job a list has shown is there) and in
    the Prefect API among the jobs not ended yet (Pending or In progress: the ones a user
    cancels or kills right after scheduling, before a sync has run);
  - no match is :class:`JobNotFound`, several are :class:`~workspaces_jobs.errors.BadInput`
    listing the candidates, so the user can add characters.

* **Not found.** A 404 from :class:`Api` is :class:`~workspaces_jobs.errors.NotFound`, a
  flow run Prefect's client cannot find (:func:`read_flow_run`) is :class:`JobNotFound`;
  a server that does not answer is :class:`~workspaces_jobs.errors.ServerUnreachable`.

* **Retries.** :func:`install` (the executor calls it first) makes every API call of the
  process, Prefect's clients and :class:`Api` alike, wait out a restart of the server
  (below).

:class:`Api` is a small synchronous client (httpx, JSON in and out): nothing on its path
imports Prefect (0.65-0.8 s of a read command; a test checks ``wsjobs show`` never does).
Credentials come from the environment :func:`workspaces_jobs.server.ensure_api` sets
(``PREFECT_API_URL``, ``PREFECT_API_AUTH_STRING`` sent as HTTP basic auth, as Prefect's
client sends it). Code holding a Prefect client calls :func:`read_flow_run`.

Waiting out an outage
---------------------
A job outlives a restart of its Prefect server: the executor waits for the API.

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

import base64
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from workspaces_jobs import runmeta
from workspaces_jobs.errors import BadInput, NotFound, ServerUnreachable

# --- job ids ------------------------------------------------------------------------------

#: A prefix shorter than this matches too much to be meant as an id.
MIN_INPUT = 4
#: How many candidates an "ambiguous" error names.
SHOWN_CANDIDATES = 10
#: Prefect states of a job not ended yet (Pending or In progress).
OPEN_STATES = ["SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"]

_PREFIX_RE = re.compile(r"^[0-9a-f-]+$")


class JobNotFound(NotFound):
    """No job with that id (exit 4, like any name the user got wrong)."""


def canonical(text: str) -> str | None:
    """The id as the API spells it when ``text`` is a full UUID, else None."""
    try:
        return str(uuid.UUID(text.strip()))
    except (ValueError, AttributeError):
        return None


def full_job_id(text: str) -> str:
    """``text`` as a full job id, or :class:`JobNotFound` saying what an id looks like
    (where a prefix cannot be looked up: the history's copy of a job)."""
    full = canonical(text)
    if full is None:
        raise JobNotFound(f"{text!r} is not a job id (a UUID like 1b9e…)")
    return full


def history_candidates(prefix: str, *, con_factory: Callable[[], Any] | None = None) -> list[str]:
    """Job ids in the history file starting with ``prefix`` (empty if there is no history)."""
    # Imported here: the history (duckdb) is only needed when a prefix is typed.
    from workspaces_jobs.reporting.store import open_store

    factory = con_factory or (lambda: open_store(read_only=True))
    try:
        with factory() as con:
            rows = (
                con.cursor()
                .execute(
                    "SELECT id FROM jobs WHERE starts_with(id, $p) ORDER BY id LIMIT $n",
                    {"p": prefix, "n": SHOWN_CANDIDATES + 1},
                )
                .fetchall()
            )
    except Exception:  # no history yet, or it is locked/moving: the API still answers
        return []
    return [str(r[0]) for r in rows]


def open_job_ids(api: Api, prefix: str) -> list[str]:
    """Ids of jobs not ended yet (Prefect API) starting with ``prefix``."""
    found: list[str] = []
    offset, page = 0, 200  # the server's largest page
    while True:
        rows = api.post_rows(
            "/flow_runs/filter",
            {
                "flow_runs": {
                    "tags": {"all_": [runmeta.JOB_TAG]},
                    "state": {"type": {"any_": OPEN_STATES}},
                },
                "limit": page,
                "offset": offset,
            },
        )
        found += [str(r["id"]) for r in rows if str(r["id"]).startswith(prefix)]
        if len(rows) < page:
            return found
        offset += page


def api_candidates(prefix: str) -> list[str]:
    """:func:`open_job_ids` on the configured API (started when it is the managed one)."""
    # server.py reads the managed server's state file; only needed for a typed prefix.
    from workspaces_jobs.server import ensure_api

    ensure_api()
    with Api() as api:
        return open_job_ids(api, prefix)


def resolve_job_id(
    text: str,
    *,
    con_factory: Callable[[], Any] | None = None,
    live: Callable[[str], list[str]] | None = api_candidates,
) -> str:
    """A full job id from a full id or a unique prefix; one-line error otherwise.

    ``con_factory`` opens the history (default: the configured file, read-only); ``live``
    lists matching ids of jobs not ended yet (default: the Prefect API; None skips it).
    """
    value = (text or "").strip().lower()
    full = canonical(value)
    if full:
        return full
    if len(value) < MIN_INPUT or not _PREFIX_RE.match(value):
        raise BadInput(
            f"{text!r} is not a job id: give the id or at least its first {MIN_INPUT} "
            "characters, as `wsjobs list` shows them"
        )
    found = set(history_candidates(value, con_factory=con_factory))
    if live is not None:
        found.update(live(value))
    if not found:
        raise JobNotFound(f"no job id starts with {value!r}: check the id with `wsjobs list`")
    if len(found) > 1:
        ordered = sorted(found)
        names = ", ".join(ordered[:SHOWN_CANDIDATES])
        more = f" and {len(ordered) - SHOWN_CANDIDATES} more" if len(ordered) > 10 else ""
        raise BadInput(
            f"job id prefix {value!r} is ambiguous: it matches {names}{more}; type more characters"
        )
    return found.pop()


def no_job(job_id: str) -> JobNotFound:
    """The one "no such job" error."""
    return JobNotFound(f"no job {job_id}: check the id with `wsjobs list`")


def read_flow_run(client: Any, job_id: str) -> Any:
    """The job's flow run through a Prefect client; ``job_id`` may be any unique prefix."""
    from prefect.exceptions import ObjectNotFound  # callers hold a Prefect client already

    job_id = resolve_job_id(job_id)
    try:
        return client.read_flow_run(uuid.UUID(job_id))
    except ObjectNotFound as exc:
        raise no_job(job_id) from exc


# --- the httpx client ---------------------------------------------------------------------


class Api:
    """A small synchronous client of the Prefect API: JSON in and out, one error mapping
    (no answer → ServerUnreachable, 404 → NotFound), the outage retries once installed."""

    def __init__(self, url: str | None = None, *, timeout: float = 30.0) -> None:
        base = url or os.environ.get("PREFECT_API_URL")
        if not base:
            raise ServerUnreachable("no Prefect API: run `wsjobs server start`")
        headers = {}
        auth = os.environ.get("PREFECT_API_AUTH_STRING")
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        self.url = base.rstrip("/")
        self.http = httpx.Client(base_url=self.url + "/", headers=headers, timeout=timeout)
        self._csrf: dict[str, str] | None = None

    def _csrf_headers(self) -> dict[str, str]:
        """The CSRF token the managed server asks of every POST (as Prefect's client gets
        it: ``GET /csrf-token?client=ID``; a server with CSRF off answers 422)."""
        if self._csrf is None:
            client = str(uuid.uuid4())
            response = self._send("GET", "csrf-token", params={"client": client})
            if response.status_code in (404, 422):
                self._csrf = {}
            else:
                response.raise_for_status()
                token = response.json()["token"]
                self._csrf = {"Prefect-Csrf-Token": token, "Prefect-Csrf-Client": client}
        return self._csrf

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if _installed and not _give_up(exc):
                    time.sleep(Outage.delay(attempt))
                    attempt += 1
                    continue
                raise ServerUnreachable(
                    f"the Prefect API at {self.url} does not answer ({type(exc).__name__}): "
                    "start it with `wsjobs server start`"
                ) from exc
            if _installed and response.status_code in BUSY and OUTAGE.failed() <= outage_limit():
                time.sleep(Outage.delay(attempt))
                attempt += 1
                continue
            OUTAGE.answered()
            return response

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if method != "GET":
            kwargs["headers"] = self._csrf_headers()
        response = self._send(method, path.lstrip("/"), **kwargs)
        if response.status_code == 404:
            raise NotFound(f"not found in the Prefect API: {path}")
        response.raise_for_status()
        return response.json()

    def post_rows(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        rows = self.call("POST", path, json=body)
        assert isinstance(rows, list)
        return rows

    def flow_run(self, job_id: str) -> dict[str, Any]:
        """The job's flow run as JSON (``job_id`` already resolved); :class:`JobNotFound`."""
        try:
            data = self.call("GET", f"/flow_runs/{job_id}")
        except NotFound as exc:
            raise no_job(job_id) from exc
        assert isinstance(data, dict)
        return data


# --- waiting out an outage ----------------------------------------------------------------

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
    import anyio  # only the executor's Prefect clients are async: read commands skip it

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
