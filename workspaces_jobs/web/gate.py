"""Who is asking: the web view's session gate, sign-in throttle and role checks.

:class:`SessionGate` (ASGI middleware) finds the signed-in user of every request before any
route runs, keeps it in the request's scope and makes it the request's actor for the
activity log (:func:`workspaces_jobs.activity.acting_as`, source ``web``: the one
middleware that does); a request without one is sent to the
sign-in page (a GET, keeping the page it asked for in ``next``) or refused with 401 (any
other method). Open without a session: the sign-in page itself, ``/static/`` and
``/healthz`` (sync status only).

The user comes from the session cookie (:mod:`workspaces_jobs.identity.sessions`) or,
when configured, from an authenticating reverse proxy's header — read only when the
connection comes from one of ``WSJOBS_TRUSTED_PROXIES`` (a header from anyone else is
ignored), and only for a name that has an enabled local account (its role decides).

Routes ask :func:`user_of` and :func:`can`; the decision itself is the role table in
:mod:`workspaces_jobs.identity.roles`. Session ids and passwords are never logged: the
server runs without an access log and the cookie value never reaches a message.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from workspaces_jobs.activity import acting_as
from workspaces_jobs.identity import User, allowed, get_user
from workspaces_jobs.identity.roles import Action
from workspaces_jobs.identity.sessions import session_user
from workspaces_jobs.settings import get_settings

SESSION_COOKIE = "wsjobs_session"
SIGNIN_PATH = "/signin"
#: Paths served without a session.
OPEN_PATHS = (SIGNIN_PATH, "/healthz")
#: ``/api/`` authenticates each request itself (a Bearer token, never a cookie: web/api.py).
OPEN_PREFIXES = ("/static/", "/api/")
#: Where the user is kept in the ASGI scope.
SCOPE_KEY = "wsjobs.user"

#: Sign-in throttle: failed attempts per user name, and per client address, in a window.
USER_FAILURES = 5
ADDRESS_FAILURES = 20
THROTTLE_WINDOW = 15 * 60.0


class Throttle:
    """Failed attempts per key inside a sliding window, on an injectable clock.

    Checked *before* a password is verified, so a blocked caller costs no argon2 work;
    bounded in memory (the oldest keys go first)."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float], max_keys: int = 10_000
    ) -> None:
        self.limit, self.window, self.clock, self.max_keys = limit, window, clock, max_keys
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        stamps = self._fails.get(key, deque())
        cut = self.clock() - self.window
        while stamps and stamps[0] <= cut:
            stamps.popleft()
        return stamps

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        stamps = self._recent(key)
        if len(stamps) < self.limit:
            return 0.0
        return max(stamps[0] + self.window - self.clock(), 1.0)

    def fail(self, key: str) -> None:
        stamps = self._recent(key)
        stamps.append(self.clock())
        self._fails.pop(key, None)
        self._fails[key] = stamps  # newest last: the oldest keys are dropped first
        while len(self._fails) > self.max_keys:
            self._fails.pop(next(iter(self._fails)))

    def clear(self, key: str) -> None:
        self._fails.pop(key, None)


def _addresses(text: str) -> frozenset[str]:
    return frozenset(a.strip() for a in text.split(",") if a.strip())


class SignInThrottle:
    """THE sign-in throttle of this server: failed attempts per user name and per client
    address, shared by the web sign-in form (:mod:`.auth`) and the JSON API's
    ``/api/v1/login`` (:mod:`.api`), so a password guessed through one is counted by the
    other too. Kept in the server's memory (a restart clears it)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.users = Throttle(USER_FAILURES, THROTTLE_WINDOW, clock)
        self.addresses = Throttle(ADDRESS_FAILURES, THROTTLE_WINDOW, clock)

    def wait(self, name: str, address: str) -> float:
        """Seconds until this name from this address may try again (0: now)."""
        return max(self.users.wait(f"user:{name}"), self.addresses.wait(f"addr:{address}"))

    def failed(self, name: str, address: str) -> None:
        self.users.fail(f"user:{name}")
        self.addresses.fail(f"addr:{address}")

    def succeeded(self, name: str) -> None:
        self.users.clear(f"user:{name}")

    async def sign_in(self, name: str, password: str, address: str) -> tuple[User | None, float]:
        """``(user, 0)`` for a right password; ``(None, 0)`` for a wrong one or an unknown
        name (the same answer); ``(None, seconds)`` while throttled, before any password
        is verified (a blocked caller costs no argon2 work)."""
        from starlette.concurrency import run_in_threadpool

        from workspaces_jobs.identity import verify_password

        wait = self.wait(name, address)
        if wait:
            return None, wait
        user = await run_in_threadpool(verify_password, name, password) if name else None
        if user is None:
            self.failed(name, address)
            return None, 0.0
        self.succeeded(name)
        return user, 0.0


def wait_text(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"try again in {minutes} minute{'s' if minutes != 1 else ''}"


@dataclass
class AuthConfig:
    """How the web view knows its users; ``clock`` (epoch seconds) is injectable."""

    idle_seconds: float
    clock: Callable[[], float] = time.time
    trusted_proxies: frozenset[str] = frozenset()
    proxy_header: str = ""
    throttle: SignInThrottle = field(init=False)

    def __post_init__(self) -> None:
        self.throttle = SignInThrottle(self.clock)

    @classmethod
    def from_settings(
        cls, *, clock: Callable[[], float] = time.time, proxies: Iterable[str] | None = None
    ) -> AuthConfig:
        s = get_settings()
        return cls(
            idle_seconds=s.session_idle_minutes * 60,
            clock=clock,
            trusted_proxies=frozenset(proxies)
            if proxies is not None
            else _addresses(s.trusted_proxies),
            proxy_header=s.proxy_user_header.strip().lower(),
        )


def safe_next(target: str | None) -> str:
    """A same-origin path to go back to after sign-in; anything else becomes ``/``."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    if parts.path == SIGNIN_PATH:
        return "/"
    return target


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class SessionGate:
    """ASGI middleware: put the request's user in the scope, or send it to sign in."""

    def __init__(self, app: ASGIApp, *, config: AuthConfig) -> None:
        self.app = app
        self.config = config

    def _proxy_user(self, scope: Scope) -> User | None:
        cfg = self.config
        if not cfg.proxy_header or not cfg.trusted_proxies:
            return None
        client = scope.get("client")
        if not client or client[0] not in cfg.trusted_proxies:
            return None  # a header from anyone but the proxy is ignored
        wanted = cfg.proxy_header.encode("latin-1")
        for key, value in scope.get("headers", []):
            if key == wanted:
                name = value.decode("latin-1").strip()
                user = get_user(name) if name else None
                return user if user and not user.disabled else None
        return None

    def _session_user(self, request: Request) -> User | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        if not sid:
            return None
        return session_user(sid, now=self.config.clock(), idle_seconds=self.config.idle_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.concurrency import run_in_threadpool

        request = Request(scope)
        user = await run_in_threadpool(self._proxy_user, scope)
        if user is None:
            user = await run_in_threadpool(self._session_user, request)
        scope[SCOPE_KEY] = user
        if user is not None:
            scope.setdefault("state", {})["user"] = user  # request.state.user, for web/activity.py
        scope["wsjobs.auth"] = self.config
        if user is not None or _is_open(request.url.path):
            # The one place a request's actor is set: every action it takes is recorded
            # as this user, from the web (the JSON API's routes narrow it to the token's
            # user and source ``api`` themselves).
            with acting_as(user.name if user else None, "web"):
                await self.app(scope, receive, send)
            return
        response: Response
        if request.method in ("GET", "HEAD"):
            asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            ended = "&expired=1" if request.cookies.get(SESSION_COOKIE) else ""
            response = RedirectResponse(
                f"{SIGNIN_PATH}?next={quote(safe_next(asked), safe='')}{ended}", status_code=303
            )
        else:
            response = PlainTextResponse(
                "401 Unauthorized: sign in first (your session may have expired).",
                status_code=401,
            )
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path="/")
        await response(scope, receive, send)


def user_of(request: Request) -> User | None:
    """The signed-in user of this request (``None`` only on the open pages)."""
    user: User | None = request.scope.get(SCOPE_KEY)
    return user


def config_of(request: Request) -> AuthConfig:
    config: AuthConfig = request.scope["wsjobs.auth"]
    return config


def can(request: Request, action: Action, owner: str | None = None) -> bool:
    """May this request's user do ``action`` (to ``owner``'s thing)? For templates too."""
    user = user_of(request)
    return user is not None and allowed(user, action, owner=owner)
