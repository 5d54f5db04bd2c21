"""A real (non-editable) install of a copy of the tree, for tests of what the package
ships: only what setup.cfg names may reach the prefix, so the copy holds only the
directories the package is built from."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What setup.cfg builds from: the package, the launcher script and the data files.
SOURCES = ("ocirt", "bin", "schemas", "contrib/man", "contrib/completions")
FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def install_copy(tmp_path: Path) -> tuple[Path, str]:
    """pip-install a copy of the tree into tmp_path/prefix; return (prefix, site-packages).
    The copy is removed afterwards, so nothing can come from it."""
    source, prefix = tmp_path / "src", tmp_path / "prefix"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        shutil.copytree(os.path.join(REPO, name), source / name, ignore=ignore)
    for name in FILES:
        shutil.copy(os.path.join(REPO, name), source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--disable-pip-version-check",
                    # --ignore-installed: without it pip would first uninstall the ocirt
                    # that the suite itself is running from the virtualenv.
                    "--ignore-installed", "--prefix", str(prefix), str(source)], check=True,
                   capture_output=True)
    shutil.rmtree(source)
    return prefix, glob.glob(str(prefix / "lib" / "python3*" / "site-packages"))[0]
