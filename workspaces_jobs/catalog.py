"""Devices and actions, loaded from YAML and validated before anything runs.

The inventory says *where* an action can run (devices with a transport and tags);
an action says *what* runs (ordered steps, each a script with a shell, a timeout and
whether its failure stops the device). Every user mistake here — an unknown device,
tag, action or parameter — is a :class:`CatalogError` with a one-line message that
says how to fix it, raised before a job is created.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined
from jinja2.exceptions import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from workspaces_jobs.errors import BadInput
from workspaces_jobs.settings import get_settings
from workspaces_jobs.stepenv import EnvSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
PARAM_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)


class CatalogError(BadInput):
    """A device, action or parameter the user named is wrong; the message says how to fix it."""


class Device(BaseModel):
    """One managed endpoint. ``local`` devices are sandboxes on the worker host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="Unique device name.")
    transport: Literal["local", "ssh"] = Field(default="local", description="How steps reach it.")
    tags: tuple[str, ...] = Field(default=(), description="Groups used as --tag targets.")
    host: str | None = Field(default=None, description="ssh: host name or address.")
    port: int = Field(default=22, description="ssh: port.")
    user: str | None = Field(default=None, description="ssh: login user.")
    key_file: str | None = Field(default=None, description="ssh: private key (else the agent).")
    known_hosts: str | None = Field(
        default=None, description="ssh: known_hosts file used to verify the host key."
    )
    trust_on_first_use: bool = Field(
        default=False, description="ssh: accept and record an unknown host key (explicit opt-in)."
    )
    jump_host: str | None = Field(default=None, description="ssh: user@host:port to tunnel via.")
    connect_timeout: float = Field(default=10.0, gt=0, description="ssh: seconds to connect.")
    max_sessions: int = Field(
        default=4, ge=1, le=9, description="ssh: concurrent sessions (sshd's MaxSessions is 10)."
    )
    env: EnvSpec = Field(
        default_factory=EnvSpec, description="Variables its steps get (see stepenv)."
    )

    @model_validator(mode="after")
    def _ssh_needs_host(self) -> Device:
        if self.transport == "ssh" and not self.host:
            raise ValueError(f"device {self.name!r} uses transport ssh: give it a host")
        return self


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: tuple[Device, ...] = ()

    @field_validator("devices")
    @classmethod
    def _unique(cls, devices: tuple[Device, ...]) -> tuple[Device, ...]:
        seen: set[str] = set()
        for d in devices:
            if d.name in seen:
                raise ValueError(f"device {d.name!r} is listed twice")
            seen.add(d.name)
        return devices

    def by_name(self) -> dict[str, Device]:
        return {d.name: d for d in self.devices}

    def resolve(self, target: Iterable[str]) -> list[Device]:
        """Devices named by a target: names, ``tag:T`` entries, or ``all``; inventory order."""
        wanted: set[str] = set()
        names = self.by_name()
        for entry in target:
            entry = entry.strip()
            if not entry:
                continue
            if entry == "all":
                wanted.update(names)
            elif entry.startswith("tag:"):
                tag = entry[4:]
                tagged = {d.name for d in self.devices if tag in d.tags}
                if not tagged:
                    known = sorted({t for d in self.devices for t in d.tags})
                    raise CatalogError(
                        f"no device has tag {tag!r}: known tags are {', '.join(known) or 'none'}"
                    )
                wanted.update(tagged)
            elif entry in names:
                wanted.add(entry)
            else:
                raise CatalogError(
                    f"unknown device {entry!r}: run `wsjobs devices` to list the inventory"
                )
        if not wanted:
            raise CatalogError("no device selected: pass --devices NAMES, --tag TAG or --all")
        return [d for d in self.devices if d.name in wanted]


class ParamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    default: str | None = None
    required: bool = False
    secret: bool = Field(
        default=False,
        description="The value is masked as *** in step log lines, the history, exports and "
        "emails (it is still stored in the Prefect flow run's parameters).",
    )


class Step(BaseModel):
    """One step of an action; it runs on each target device in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    script: str = Field(description="Script body; parameters arrive as PARAM_<NAME> variables.")
    shell: str = Field(default="/bin/sh", description="Interpreter the script is fed to.")
    critical: bool = Field(default=True, description="A failure stops this device's later steps.")
    timeout: float | None = Field(default=None, gt=0, description="Hard limit in seconds.")


class Action(BaseModel):
    """A script action: what an ops engineer picks in the product's action list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    steps: tuple[Step, ...] = Field(min_length=1)
    inactivity_timeout: float | None = Field(default=None, gt=0)
    inactivity_hard_limit: float | None = Field(
        default=None, gt=0, description="Seconds a step may stay silent before it is stopped."
    )
    timeout: float | None = Field(
        default=None, gt=0, description="Hard limit in seconds for the whole job (TimedOut)."
    )
    env: EnvSpec = Field(
        default_factory=EnvSpec, description="Variables its steps get (see stepenv)."
    )

    @field_validator("params")
    @classmethod
    def _param_names(cls, params: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in params:
            if not re.match(PARAM_PATTERN, name):
                raise ValueError(f"parameter name {name!r} must match {PARAM_PATTERN}")
        return params

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        names = [s.name for s in steps]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"step names must be unique, repeated: {', '.join(sorted(dupes))}")
        return steps

    def secret_params(self) -> list[str]:
        return sorted(name for name, spec in self.params.items() if spec.secret)

    def bind_params(self, given: Mapping[str, Any] | None) -> dict[str, str]:
        """Validate user parameters against the declaration; fill defaults; all values text."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise CatalogError(
                f"unknown parameter {unknown[0]!r} for action {self.name!r}: it takes {known}"
            )
        bound: dict[str, str] = {}
        for name, spec in self.params.items():
            if name in given and given[name] is not None:
                bound[name] = str(given[name])
            elif spec.default is not None:
                bound[name] = spec.default
            elif spec.required:
                raise CatalogError(
                    f"action {self.name!r} needs parameter {name!r}: pass --param {name}=VALUE"
                )
        return bound


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}"


def load_inventory(path: Path | None = None) -> Inventory:
    path = path or get_settings().inventory_path
    data = _yaml(path) or {}
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(f"inventory {path}: {_first_error(exc)}") from exc


def load_actions(folder: Path | None = None) -> dict[str, Action]:
    """All ``*.yaml`` actions in a folder, by name."""
    folder = folder or get_settings().actions_path
    actions: dict[str, Action] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            action = Action.model_validate(_yaml(path))
        except ValidationError as exc:
            raise CatalogError(f"action file {path}: {_first_error(exc)}") from exc
        if action.name in actions:
            raise CatalogError(f"action {action.name!r} is defined twice (in {path})")
        actions[action.name] = action
    return actions


def get_action(name: str, folder: Path | None = None) -> Action:
    actions = load_actions(folder)
    if name not in actions:
        known = ", ".join(sorted(actions)) or "none"
        raise CatalogError(f"unknown action {name!r}: known actions are {known}")
    return actions[name]


def valid_name(text: str) -> bool:
    return bool(_NAME_RE.match(text))


_TEMPLATES = SandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    # Every value printed into shell text is shell-quoted, so a parameter can never
    # become code, whatever it contains.
    finalize=lambda value: shlex.quote(str(value)),
    keep_trailing_newline=True,
)


def render_script(script: str, *, params: Mapping[str, str], device: str, job_id: str) -> str:
    """Render ``{{ params.x }}`` placeholders, each shell-quoted; plain scripts pass through."""
    if "{{" not in script and "{%" not in script:
        return script
    try:
        return _TEMPLATES.from_string(script).render(params=params, device=device, job_id=job_id)
    except TemplateError as exc:
        raise CatalogError(f"script template error: {exc}") from exc
