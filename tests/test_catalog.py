"""Inventory targets, action parameters and script templating (pure, no API)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from workspaces_jobs.catalog import (
    CatalogError,
    get_action,
    load_actions,
    load_inventory,
    render_script,
)
from workspaces_jobs.settings import packaged_data

DATA = Path(__file__).parent / "data"


def test_resolve_names_tags_and_all() -> None:
    inv = load_inventory(DATA / "inventory.yaml")
    assert [d.name for d in inv.resolve(["t3", "t1"])] == ["t1", "t3"]
    assert [d.name for d in inv.resolve(["tag:alpha"])] == ["t1", "t2"]
    assert [d.name for d in inv.resolve(["all"])] == ["t1", "t2", "t3"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (["nope"], "unknown device 'nope': run `wsjobs devices`"),
        (["tag:zzz"], "no device has tag 'zzz': known tags are alpha, beta"),
        ([], "no device selected"),
    ],
)
def test_resolve_errors(target: list[str], message: str) -> None:
    with pytest.raises(CatalogError, match=message.replace("(", r"\(")):
        load_inventory(DATA / "inventory.yaml").resolve(target)


def test_unknown_action_lists_known_ones() -> None:
    with pytest.raises(CatalogError, match="unknown action 'nope': known actions are broken, "):
        get_action("nope", DATA / "actions")


def test_bind_params() -> None:
    inject = get_action("inject", DATA / "actions")
    assert inject.bind_params({"value": 3}) == {"value": "3"}
    with pytest.raises(CatalogError, match="needs parameter 'value'"):
        inject.bind_params({})
    with pytest.raises(CatalogError, match="unknown parameter 'colour' for action 'inject'"):
        inject.bind_params({"value": "x", "colour": "red"})


def test_bad_yaml_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: x\nsteps: []\n")
    with pytest.raises(CatalogError, match=r"action file .*bad.yaml: steps: "):
        load_actions(tmp_path)
    inv = tmp_path / "inv.yaml"
    inv.write_text("devices:\n  - {name: 'has space'}\n")
    with pytest.raises(CatalogError, match="devices.0.name"):
        load_inventory(inv)


def test_packaged_demo_catalog_is_valid() -> None:
    actions = load_actions(packaged_data("actions"))
    assert {"demo-patch", "demo-inventory", "echo"} <= set(actions)
    assert len(load_inventory(packaged_data("inventory.yaml")).devices) >= 3


HOSTILE = "$(touch /tmp/pwned); rm -rf x `id` \"'; echo"


def test_template_values_are_shell_quoted(tmp_path: Path) -> None:
    script = render_script(
        "printf '%s' {{ params.v }}", params={"v": HOSTILE}, device="d", job_id="j"
    )
    assert script == f"printf '%s' {shlex.quote(HOSTILE)}"
    out = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout == HOSTILE
    assert list(tmp_path.iterdir()) == []


def test_template_undefined_is_an_error() -> None:
    with pytest.raises(CatalogError, match="script template error"):
        render_script("echo {{ params.missing }}", params={}, device="d", job_id="j")


def test_user_message_keeps_quotes_except_keyerror_repr() -> None:
    from workspaces_jobs.errors import user_message

    assert user_message(ValueError("'x' is not a job id")) == "'x' is not a job id"
    assert user_message(KeyError("no such filter")) == "no such filter"
