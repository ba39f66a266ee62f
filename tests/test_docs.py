"""Docs stay honest: every command and every setting is in the README."""

from __future__ import annotations

from pathlib import Path

import typer.main

from workspaces_jobs.cli import app
from workspaces_jobs.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_command_is_in_the_cli_reference() -> None:
    group = typer.main.get_command(app)
    names = sorted(group.commands)  # type: ignore[attr-defined]
    assert {"run", "show", "list", "sync", "export", "cancel"} <= set(names)
    reference = README[README.index("## CLI reference") : README.index("## Configuration")]
    missing = [n for n in names if f"`wsjobs {n}" not in reference]
    assert not missing, f"add these commands to the README's CLI reference: {missing}"


def test_every_setting_is_documented() -> None:
    config = README[README.index("## Configuration") :]
    missing = [
        f"WSJOBS_{name.upper()}"
        for name in Settings.model_fields
        if f"WSJOBS_{name.upper()}" not in config
    ]
    assert not missing, f"add these settings to the README's Configuration table: {missing}"


def test_every_notification_setting_is_documented() -> None:
    from workspaces_jobs.notify.smtp import NotifySettings
    from workspaces_jobs.notify.webhooks import WebhookSettings

    notes = README[README.index("## Notifications") :]
    missing = [
        f"WSJOBS_{name.upper()}"
        for settings in (NotifySettings, WebhookSettings)
        for name in settings.model_fields
        if f"WSJOBS_{name.upper()}" not in notes
    ]
    assert not missing, f"add these settings to the README's Notifications: {missing}"
