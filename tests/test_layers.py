"""The dependency direction of DESIGN.md: each package imports only the layers below it.

The import graph is read from the source with `ast`, so an import inside a function counts
as much as one at the top of a module (it runs as soon as the function does); imports under
`if TYPE_CHECKING:` never run and do not count.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "probes", "circuits")

# What each package may import, besides itself: the core nothing above it, each analyzer
# package the core only (the two analyzer packages are independent of each other today).
ALLOWED: dict[str, set[str]] = {"interp": set(), "probes": {"interp"}, "circuits": {"interp"}}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in `nodes`, at any depth, except under `if TYPE_CHECKING:`."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _import_nodes(node.orelse)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node))


def imported_modules(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of `known` that module `name` imports.

    `from a.b import c` imports the module `a.b.c` when there is one, else `a.b`; an
    import of something outside `known` (torch, a.b.missing) is cut to its known prefix.
    """
    here = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes([ast.parse(source)]):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """{module: the modules of `packages` it imports} for every .py file of `packages`."""
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    known = set(files)
    return {
        name: imported_modules(path.read_text(), name, path.name == "__init__.py", known)
        for name, path in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for each import of a package that `ALLOWED` does not allow (no exemption)."""
    violations = []
    for module, targets in sorted(graph.items()):
        package = module.partition(".")[0]
        allowed = {package} | ALLOWED[package]
        violations += [
            f"{module} -> {target}"
            for target in sorted(targets)
            if target.partition(".")[0] not in allowed
        ]
    return violations


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


def test_each_package_imports_only_the_layers_below_it():
    assert layer_violations(import_graph()) == []


def test_the_cli_registers_analyzer_commands_by_name_only():
    """The core reaches the commands of probes and circuits through dotted names, never an
    import (the layering test above sees the imports): each name resolves."""
    from interp.cli import COMMANDS_BY_NAME

    targets = [target for *_, target in COMMANDS_BY_NAME]
    assert {target.partition(".")[0] for target in targets} == {"interp", "probes", "circuits"}
    for target in targets:
        module, attribute = target.split(":")
        assert callable(getattr(importlib.import_module(module), attribute))


def test_the_loader_declares_builders_above_the_core_by_name_only():
    """The loader reaches a model organism (shapes-llava, in probes) through a dotted module
    name, never an import: each declared module exists and registers its name when imported."""
    from interp import models

    assert models._DECLARED  # the check below must have something to check
    for name, module in models._DECLARED.items():
        assert module.partition(".")[0] in PACKAGES
        assert models.registered_builder(name) is models._BUILDERS[name]


def test_importing_interp_is_light():
    code = "import sys, interp; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"interp/__init__.py": "", "interp/a.py": "import interp.b\n", "interp/b.py": ""},
            [],
            id="no-cycle",
        ),
        pytest.param(
            {
                "interp/__init__.py": "",
                "interp/a.py": "def f():\n    from interp.b import g\n",
                "interp/b.py": "from interp import a\n",
            },
            ["interp.a", "interp.b", "interp.a"],
            id="function-level-import",
        ),
        pytest.param(
            {
                "interp/__init__.py": "",
                "interp/a.py": "from .b import g\n",
                "interp/b.py": "from . import a\n",
            },
            ["interp.a", "interp.b", "interp.a"],
            id="relative-import",
        ),
        pytest.param(
            {
                "interp/__init__.py": "",
                "interp/a.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from interp.b import g\n",
                "interp/b.py": "import interp.a\n",
            },
            [],
            id="type-checking-only",
        ),
    ],
)
def test_find_cycle_sees_every_kind_of_import(
    tmp_path: Path, files: dict[str, str], expected: list[str]
):
    _write(tmp_path, files)
    assert find_cycle(import_graph(tmp_path, ("interp",))) == expected


@pytest.mark.parametrize(
    ("relative", "text", "expected"),
    [
        ("interp/heads.py", "def f():\n    import probes.sinks\n", "interp.heads -> probes.sinks"),
        (
            "interp/cli/models.py",
            "from circuits import tasks\n",
            "interp.cli.models -> circuits.tasks",
        ),
        ("probes/sinks.py", "from circuits.tasks import ioi\n", "probes.sinks -> circuits.tasks"),
        ("circuits/tasks.py", "import probes.sinks\n", "circuits.tasks -> probes.sinks"),
        (
            "interp/cli/sinks.py",
            "from circuits import tasks\n",
            "interp.cli.sinks -> circuits.tasks",
        ),
    ],
)
def test_layer_check_refuses_an_upward_import(
    tmp_path: Path, relative: str, text: str, expected: str
):
    _write(
        tmp_path,
        {
            "interp/__init__.py": "",
            "interp/cli/__init__.py": "",
            "probes/__init__.py": "",
            "probes/sinks.py": "",
            "circuits/__init__.py": "",
            "circuits/tasks.py": "",
            relative: text,
        },
    )
    assert layer_violations(import_graph(tmp_path)) == [expected]
