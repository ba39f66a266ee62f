"""Reach the Prefect API before a command talks to it: every command group shares this
(it lived in the ``run``/``show`` module, so other groups imported a command module)."""

from __future__ import annotations

from workspaces_jobs.cli.output import err_console, safe_text


def connect() -> None:
    """Reach the Prefect API, starting the managed local server if needed (with a spinner).

    An API that does not answer is :class:`~workspaces_jobs.errors.ServerUnreachable`
    at once: Prefect's client would retry a refused connection for ~15 s first."""
    from workspaces_jobs.server import ensure_api

    with err_console.status("Connecting to Prefect…") as spinner:
        url = ensure_api(wait=lambda msg: spinner.update(safe_text(msg)))
    check_answers(url)


def check_answers(url: str, *, timeout: float = 10.0) -> None:
    """Raise ServerUnreachable unless something answers HTTP at the API's health URL.

    Any HTTP answer counts (an API with credentials may say 401 here): only "nobody
    answers" is unreachable."""
    import httpx

    from workspaces_jobs.cli.boundary import unreachable

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
    except httpx.TransportError as exc:
        raise unreachable(url.rstrip("/").removesuffix("/api"), exc) from exc
