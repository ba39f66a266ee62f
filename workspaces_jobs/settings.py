"""Configuration, read from ``WSJOBS_*`` environment variables (docs/configuration.md).

Settings are read on every call to :func:`get_settings` rather than cached at import,
so a worker, a test or a CLI flag that changes the environment is honoured.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "workspaces-jobs"


def packaged_data(name: str) -> Path:
    """Path of a file shipped in ``workspaces_jobs/data`` (demo inventory and actions)."""
    return Path(str(resources.files("workspaces_jobs") / "data" / name))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WSJOBS_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home,
        description="Data folder: managed Prefect server, history file, local device sandboxes.",
    )
    inventory: Path | None = Field(
        default=None, description="Device inventory YAML; defaults to the packaged demo inventory."
    )
    actions: Path | None = Field(
        default=None,
        description="Folder of action YAML files; defaults to the packaged demo actions.",
    )
    history: Path | None = Field(
        default=None,
        description="History catalog (an SQLite file, data beside it in FILE.files/);"
        " defaults to HOME/history.ducklake.",
    )
    history_catalog: str | None = Field(
        default=None,
        description="A team history's catalog in PostgreSQL: postgres:<libpq connection"
        " string>; wins over WSJOBS_HISTORY.",
    )
    history_data: str | None = Field(
        default=None,
        description="Folder of the history's data files; defaults to CATALOG.files/"
        " (required with a PostgreSQL catalog: a path every host reads).",
    )
    history_keep_days: float = Field(
        default=7.0,
        gt=0,
        description="Days of history snapshots kept for time travel; older ones expire.",
    )
    history_stale_after: float = Field(
        default=300.0,
        ge=0,
        description="Seconds after the last sync when list/show/export warn the history"
        " is old (0: never warn).",
    )
    max_parallel: int = Field(
        default=16, ge=1, le=10_000, description="How many devices a job works on at once."
    )
    spread_over: int = Field(
        default=1000,
        ge=0,
        le=10_000_000,
        description="A job from a deployment on more devices than this spreads them over the"
        " workers of its queue, in shards (0: never).",
    )
    shard_size: int = Field(
        default=500, ge=1, le=1_000_000, description="Devices per shard of a spread job."
    )
    inactivity_timeout: float = Field(
        default=900.0,
        gt=0,
        le=30 * 86_400,
        allow_inf_nan=False,
        description="Seconds a job may stay In progress without output before it becomes Error.",
    )
    inactivity_hard_limit: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "Seconds a step may stay silent before it is stopped (the job then ends Error, "
            "timed out). Longer than the inactivity timeout: a job marked Error (inactivity) "
            "keeps running until this limit and may still complete."
        ),
    )
    lock_timeout: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="Seconds a sync waits while another sync writes the history.",
    )
    prefect_retention_days: float = Field(
        default=90.0,
        ge=0,
        le=36500,
        description="Days the managed server keeps finished flow runs (Prefect's db_vacuum; "
        "0 keeps them forever). The history keeps its own copy (wsjobs prune).",
    )
    sync_source: Literal["auto", "api"] = Field(
        default="auto",
        description="Where the history sync reads jobs: auto = the managed server's database "
        "file when its schema is a known one, else the API; api = always the API. "
        "`wsjobs sync` prints one `Read:` line saying which path it took and why.",
    )
    server_port: int = Field(
        default=4200,
        ge=1,
        le=65_535,
        description="Port of the managed local Prefect server on its first start (next free "
        "if taken); later starts reuse the port recorded in server.json.",
    )
    show_lines: int = Field(
        default=10,
        ge=0,
        description="Log lines per step `wsjobs show` prints, the last ones (0 = all).",
    )
    companions: str | None = Field(
        default=None,
        description="Comma-separated companions run with the managed server: watchdog, "
        "worker, history-sync (wsjobs sync --every 5). Unset: all; empty: none.",
    )

    session_idle_minutes: float = Field(
        default=120.0,
        gt=0,
        le=30 * 24 * 60,
        allow_inf_nan=False,
        description="Minutes a web sign-in stays valid without use; then the browser is sent"
        " back to the sign-in page (keeping the page it asked for).",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses of an authenticating reverse proxy whose user"
        " header the web view trusts (empty: none).",
    )
    proxy_user_header: str = Field(
        default="",
        description="Header carrying the signed-in user's name from a trusted proxy, e.g."
        " X-Forwarded-User (empty: off; only read from WSJOBS_TRUSTED_PROXIES).",
    )

    work_pool: str = Field(
        default="workspaces",
        description="Prefect work pool of schedules and later jobs (created as a process pool "
        "if missing; the managed worker polls it).",
    )
    work_queue: str = Field(
        default="default", description="Work queue of that pool that schedules and later jobs use."
    )

    @property
    def inventory_path(self) -> Path:
        return self.inventory or packaged_data("inventory.yaml")

    @property
    def actions_path(self) -> Path:
        return self.actions or packaged_data("actions")

    @property
    def history_path(self) -> Path:
        return self.history or self.home / "history.ducklake"

    @property
    def devices_root(self) -> Path:
        """Where local devices get their sandbox working folders."""
        return self.home / "devices"


_cached: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def get_settings() -> Settings:
    """The settings for the current environment.

    Read again only when a variable they come from changed (``WSJOBS_*``, and ``HOME`` /
    ``XDG_DATA_HOME``, which place the default home): building them costs ~0.4 ms, and a
    job used to pay that on every step (#19). A test or flag that changes the environment
    is still honoured at the next call."""
    global _cached
    key = tuple(
        sorted(
            (k, v)
            for k, v in os.environ.items()
            if k.upper().startswith("WSJOBS_") or k in ("HOME", "XDG_DATA_HOME")
        )
    )
    cached = _cached
    if cached is not None and cached[0] == key:
        return cached[1]
    settings = Settings()
    _cached = (key, settings)
    return settings
