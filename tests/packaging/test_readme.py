"""The READMEs speak to users of a fresh Debian 12 root: no `sudo` (a fresh root has
none), nothing outside the repository (users do not have the project's ../shared), and
every repository path they name exists."""

from __future__ import annotations

import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READMES = ["README.md", "conformance/README.md"]
# The first word of a code span or the target of a link: `contrib/setup.sh --no-demo`,
# [..](bench/results/results.md); for conformance/README.md also its own `sandbox.py`.
CODE_RE = re.compile(r"`([^`\s]+)[^`]*`|\]\(([^)#\s]+)")
TOP = ("contrib/", "bench/", "conformance/", "tests/", "ocirt/", "schemas/", "bin/")


def text(name: str) -> str:
    with open(os.path.join(REPO, name)) as f:
        return f.read()


@pytest.mark.parametrize("name", READMES)
def test_no_sudo_and_nothing_outside_the_repository(name):
    body = text(name)
    assert not re.search(r"\bsudo\b", body), f"{name} uses sudo"
    assert "../shared" not in body and "/work/" not in body, f"{name} points outside"


@pytest.mark.parametrize("name", READMES)
def test_named_repository_paths_exist(name):
    here = os.path.dirname(os.path.join(REPO, name))
    named = [a or b for a, b in CODE_RE.findall(text(name))]
    paths = [p for p in named if p.startswith(TOP) or (name != "README.md" and
                                                        re.fullmatch(r"[\w]+\.py", p))]
    assert len(paths) >= 3, f"{name}: {paths} (the pattern is broken)"
    missing = [p for p in paths if not any(
        glob.glob(os.path.join(base, p)) for base in (REPO, here))]
    assert missing == [], f"{name} names paths that do not exist: {missing}"
