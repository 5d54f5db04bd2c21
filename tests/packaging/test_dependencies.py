"""The declared dependencies are the ones ocirt uses: every distribution in setup.cfg's
install_requires is imported somewhere in ocirt/ (lazily counts). A declared package that
nothing imports only makes `pip install` heavier or, like python-prctl (no wheel, needs a
compiler and libcap headers), makes it fail on a machine without a compiler."""

from __future__ import annotations

import ast
import configparser
import os
import re
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "ocirt")
# Distributions whose import name is not their normalized project name.
IMPORT_NAMES = {"python-prctl": "prctl", "pyyaml": "yaml", "pycryptodome": "Crypto"}


def declared_requirements() -> list[str]:
    """Project names from setup.cfg's install_requires and pyproject's dependencies."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    lines = cfg.get("options", "install_requires", fallback="").splitlines()
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        lines += tomllib.load(f).get("project", {}).get("dependencies", [])
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.match(r"[A-Za-z0-9._-]+", line).group(0).lower())
    return names


def import_name(project: str) -> str:
    return IMPORT_NAMES.get(project, re.sub(r"[-.]", "_", project))


def top_level_imports() -> set[str]:
    """Top-level names of every absolute import in ocirt/, at any depth in the code."""
    found: set[str] = set()
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(alias.name.partition(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.partition(".")[0])
    return found


def test_requirements_are_declared():
    """The parser finds what setup.cfg declares (an empty list would pass anything)."""
    assert {"jsonschema", "pyroute2", "cryptography"} <= set(declared_requirements())


def test_every_declared_dependency_is_imported():
    imported = top_level_imports()
    unused = [p for p in declared_requirements() if import_name(p) not in imported]
    assert unused == [], f"declared in setup.cfg but never imported by ocirt/: {unused}"


def test_python_prctl_is_not_declared():
    """ocirt does capabilities, securebits, no_new_privs and pdeathsig through its own
    ctypes boundary (ocirt/linux/); python-prctl would need a compiler to install."""
    assert "python-prctl" not in declared_requirements()
    assert "prctl" not in top_level_imports()
