"""The package's layering: no import cycle between ocirt's subpackages (top-level
modules such as ocirt.state count as packages of their own), and no test-only code in
the package. Imports inside functions count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "ocirt")
# Leaf modules that every layer may use: they import nothing of ocirt's but each other.
FOUNDATION = {"ocirt", "ocirt.errors", "ocirt.jsonio", "ocirt.log", "ocirt.undo"}


def unit_of(module: str) -> str:
    """`ocirt.cgroups.v2` -> `ocirt.cgroups`; `ocirt.state` -> `ocirt.state`."""
    parts = module.split(".")
    return ".".join(parts[:2])


def module_files() -> dict[str, str]:
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def imported_modules(module: str, path: str) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in out if m == "ocirt" or m.startswith("ocirt.")}


def unit_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        src = unit_of(module)
        for target in imported_modules(module, path):
            while target not in files and "." in target:
                target = target.rpartition(".")[0]  # `from ocirt.x import name`
            dst = unit_of(target)
            if dst != src and dst not in FOUNDATION and src not in FOUNDATION:
                graph.setdefault(src, set()).add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as a path, or [] (depth-first search with colours)."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return []

    for node in sorted(graph):
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return []


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) == []


def test_the_graph_sees_lazy_and_relative_imports():
    graph = unit_graph()
    assert "ocirt.cgroups" in graph["ocirt.runtime"]  # runtime.control, a top-level import
    assert "ocirt.runtime" in graph["ocirt.cli"]  # the CLI imports handlers lazily


def test_no_import_cycle_between_subpackages():
    cycle = find_cycle(unit_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", ["decide", "BPFFault", "run"])
def test_the_bpf_interpreter_is_test_code(name):
    from ocirt.cgroups import bpf

    assert not hasattr(bpf, name), f"ocirt.cgroups.bpf.{name} is test-only code"


def test_foundation_modules_import_only_each_other():
    files = module_files()
    for module in sorted(FOUNDATION):
        outside = {unit_of(m) for m in imported_modules(module, files[module])} - FOUNDATION
        assert not outside, f"{module} imports {sorted(outside)}"
