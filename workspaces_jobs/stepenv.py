"""The environment a step's script gets: explicit, never the executor's whole environment.

The executor's process holds credentials a script has no business seeing
(``WSJOBS_SMTP_PASSWORD``, ``PREFECT_API_KEY``, ``PREFECT_API_AUTH_STRING``, cloud keys,
``SSH_AUTH_SOCK``); a step that prints its environment would put them into the logs, the
history, exports and emails. So a local step gets only:

1. the basics a shell needs, from the worker's environment when set (:data:`BASE_NAMES`
   and every ``LC_*``);
2. what the inventory's device and then the action declare under ``env:`` — ``pass:``
   names taken from the worker's environment, ``set:`` fixed values, ``secrets:``
   values of Prefect Secret blocks (masked as ``***`` in every log line);
3. ``PARAM_<NAME>`` for each parameter and the ``WSJOBS_*`` job context (these win).

An SSH step gets 2 and 3 (the remote login provides its own basics). ``WSJOBS_*`` and
``PREFECT_*`` names cannot be passed through (they carry this product's and Prefect's
credentials), and ``PARAM_*``/``WSJOBS_*`` cannot be set (the runner owns them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Variables a local step inherits from the worker when set (plus every ``LC_*``).
BASE_NAMES = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TZ",
    "TMPDIR",
    "TERM",
)
BASE_PREFIXES = ("LC_",)
#: Names the runner sets itself: an ``env.set`` may not use them.
RESERVED_PREFIXES = ("PARAM_", "WSJOBS_")
#: Names an ``env.pass`` may not take from the worker: credentials live there.
NO_PASS_PREFIXES = ("WSJOBS_", "PREFECT_")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class EnvSpec(BaseModel):
    """``env:`` of an action or a device: ``pass`` names from the worker, ``set`` values."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    pass_: tuple[str, ...] = Field(
        default=(), alias="pass", description="Worker variables the step may see (when set)."
    )
    set: dict[str, str] = Field(default_factory=dict, description="Fixed variables for the step.")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Variable name -> Prefect Secret block name; the value is masked in logs.",
    )

    @field_validator("pass_")
    @classmethod
    def _passable(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            _check_name(name)
            if name.startswith(NO_PASS_PREFIXES):
                raise ValueError(
                    f"env.pass: {name!r} cannot be passed to steps (WSJOBS_* and PREFECT_* "
                    "variables hold credentials); use env.set with the value the step needs"
                )
        return names

    @field_validator("set", "secrets")
    @classmethod
    def _settable(cls, values: dict[str, str]) -> dict[str, str]:
        for name in values:
            _check_name(name)
            if name.startswith(RESERVED_PREFIXES):
                raise ValueError(
                    f"env.set: {name!r} is set by the step runner (PARAM_* and WSJOBS_*); "
                    "pick another name"
                )
        return values

    def __bool__(self) -> bool:
        return bool(self.pass_ or self.set or self.secrets)


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"env: {name!r} is not a valid variable name (letters, digits, _)")


def declared(
    specs: Iterable[EnvSpec | None],
    environ: Mapping[str, str],
    blocks: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The declared variables, later specs overriding earlier ones (device, then action);
    ``blocks``: Secret block name -> value (:func:`load_secret_blocks`)."""
    out: dict[str, str] = {}
    loaded = blocks or {}
    for spec in specs:
        if not spec:
            continue
        out.update({name: environ[name] for name in spec.pass_ if name in environ})
        out.update(spec.set)
        out.update({name: loaded[b] for name, b in spec.secrets.items() if b in loaded})
    return out


def load_secret_blocks(specs: Iterable[EnvSpec | None]) -> dict[str, str]:
    """Block name -> value of each Prefect Secret block the specs name (loaded once per
    job, in the flow; a missing block is an error that names it)."""
    from prefect.blocks.system import Secret

    from workspaces_jobs.errors import BadInput

    out: dict[str, str] = {}
    for spec in specs:
        for name, block in (spec.secrets if spec else {}).items():
            try:
                value = cast(Any, Secret.load(block)).get()
            except ValueError as exc:
                raise BadInput(
                    f"env.secrets: {name} names the Prefect Secret block {block!r}, which "
                    f"cannot be loaded ({exc}); create it with `prefect block create secret`"
                ) from exc
            out[block] = value if isinstance(value, str) else json.dumps(value)
    return out


def base(environ: Mapping[str, str]) -> dict[str, str]:
    """The basics a local shell needs, from the worker's environment."""
    out = {name: environ[name] for name in BASE_NAMES if name in environ}
    out.update({k: v for k, v in environ.items() if k.startswith(BASE_PREFIXES)})
    return out
