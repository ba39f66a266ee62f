"""The floor plan (docs/development.md), held by a test that reads every import.

Floors, bottom to top:

* ground: ``status``, ``runmeta``, ``jobfacts``, ``catalog``, ``settings``, ``errors``,
  ``clock`` import nothing of ours above the ground;
* ``flows/`` and ``tasks/`` stand on it; ``reporting/`` beside them never imports ``tasks/``;
* the faces, ``cli/`` and ``web/``, are on top: nothing else imports them;
* no import cycles.

Imports are read with :mod:`ast` from the sources under their installed names
(``flows/hooks.py`` is ``workspaces_jobs.flows.hooks``), function-local imports included:
an import moved into a function to dodge a cycle is still an arrow. What breaks a rule
today is listed below, explicitly: the list may only shrink. A new forbidden import
fails with the file, line and rule; a listed one that is gone is reported so the list can
be cut. There is no list of allowed cycles: a cycle fails. Pure: no server.
"""

from __future__ import annotations

import ast
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "workspaces_jobs"
GROUND = {f"{PACKAGE}.{name}" for name in ("status", "runmeta", "jobfacts", "catalog")} | {
    # stepenv: the pure model of a step's environment, part of an action's definition.
    f"{PACKAGE}.{name}"
    for name in ("settings", "errors", "clock", "stepenv")
}
FACES = (f"{PACKAGE}.cli", f"{PACKAGE}.web")

#: (importer, imported) arrows that break a rule today. Only shrink this list.
ALLOWED: set[tuple[str, str]] = set()


def _cycle(*names: str) -> frozenset[str]:
    return frozenset(f"{PACKAGE}.{name}" for name in names)


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    path: str
    line: int


def _modules() -> dict[str, Path]:
    """{installed module name: source file} for every module of the package."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    dirs = mapping["tool"]["setuptools"]["package-dir"]
    mapped = {name.split(".", 1)[1] for name in dirs if name != PACKAGE}
    found: dict[str, Path] = {}
    for package, folder in dirs.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            if package == PACKAGE and rel.parts[0] in mapped:
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that ``name`` (a module or a name in one) lives in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def arrows() -> list[Arrow]:
    modules = _modules()
    out = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: set[str | None] = set()
            if isinstance(node, ast.Import):
                targets = {_resolve(alias.name, modules) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    base = base if is_package else base[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # ``from pkg import mod`` is an arrow to pkg.mod; ``from mod import name``
                # to mod.
                for alias in node.names:
                    full = f"{prefix}.{alias.name}"
                    targets.add(full if full in modules else _resolve(prefix, modules))
            for target in sorted(t for t in targets if t):
                if target != module and not module.startswith(target + "."):
                    out.append(Arrow(module, target, str(path.relative_to(ROOT)), node.lineno))
    return out


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(found: list[Arrow]) -> dict[tuple[str, str], tuple[Arrow, str]]:
    bad: dict[tuple[str, str], tuple[Arrow, str]] = {}
    for arrow in found:
        rule = None
        if arrow.source in GROUND and arrow.target not in GROUND:
            rule = "the ground floor imports nothing above it"
        elif _in(arrow.source, f"{PACKAGE}.reporting") and _in(arrow.target, f"{PACKAGE}.tasks"):
            rule = "reporting/ never imports tasks/"
        elif any(_in(arrow.target, face) for face in FACES) and not any(
            _in(arrow.source, face) for face in FACES
        ):
            rule = "only the faces (cli/, web/) import the faces"
        if rule:
            bad.setdefault((arrow.source, arrow.target), (arrow, rule))
    return bad


def cycles(found: list[Arrow]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for arrow in found:
        graph.setdefault(arrow.source, set()).add(arrow.target)
        graph.setdefault(arrow.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[frozenset[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_the_import_reader_sees_mapped_packages() -> None:
    found = arrows()
    assert any(a.source.startswith(f"{PACKAGE}.flows.") for a in found)
    assert any(a.target.startswith(f"{PACKAGE}.reporting") for a in found)
    assert len(found) > 100  # the ~4 arrows a folder-based reader sees would fail this


def test_no_forbidden_import_beyond_the_allow_list() -> None:
    bad = violations(arrows())
    new = {key: value for key, value in bad.items() if key not in ALLOWED}
    assert not new, (
        "forbidden imports (move the import up a floor, or list it in ALLOWED):\n"
        + "\n".join(
            f"{a.path}:{a.line}: {a.source} imports {a.target}: {rule}"
            for a, rule in sorted(new.values(), key=lambda v: (v[0].path, v[0].line))
        )
    )
    gone = sorted(ALLOWED - set(bad))
    if gone:
        warnings.warn(f"fixed, remove from ALLOWED in {__file__}: {gone}", stacklevel=1)


def test_no_import_cycle() -> None:
    """Function-local imports count: moving an import into a function does not break a
    cycle, it hides it."""
    found = cycles(arrows())
    assert not found, "import cycles (move the shared part a floor down):\n" + "\n".join(
        " <-> ".join(sorted(c)) for c in found
    )


def test_the_rules_catch_what_they_forbid() -> None:
    def arrow(source: str, target: str) -> Arrow:
        return Arrow(f"{PACKAGE}.{source}", f"{PACKAGE}.{target}", "x.py", 1)

    bad = violations(
        [
            arrow("status", "flows.hooks"),
            arrow("reporting.store", "tasks.run_step"),
            arrow("notify.deliver", "cli.output"),
            arrow("web.routes", "reporting.query"),  # a face on top may import anything
            arrow("flows.hooks", "status"),
        ]
    )
    assert {(s.split(".", 1)[1], t.split(".", 1)[1]) for s, t in bad} == {
        ("status", "flows.hooks"),
        ("reporting.store", "tasks.run_step"),
        ("notify.deliver", "cli.output"),
    }
    ring = [arrow("a", "b"), arrow("b", "c"), arrow("c", "a"), arrow("c", "d")]
    assert cycles(ring) == [_cycle("a", "b", "c")]
