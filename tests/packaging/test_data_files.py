"""The package installs the man pages and the bash completion under its prefix, as
setup.cfg's [options.data_files] says: share/man/man8 and share/bash-completion/completions
(for a system-wide pip install: /usr/local/share, where man and bash-completion look)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.packaging.helpers import REPO, install_copy


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    return install_copy(tmp_path_factory.mktemp("install"))[0]


def test_man_pages_installed(prefix):
    man8 = prefix / "share" / "man" / "man8"
    committed = sorted(os.listdir(os.path.join(REPO, "contrib", "man")))
    assert "ocirt.8" in committed and "ocirt-run.8" in committed
    assert sorted(os.listdir(man8)) == committed
    for name in committed:
        with open(os.path.join(REPO, "contrib", "man", name), "rb") as f:
            assert (man8 / name).read_bytes() == f.read(), name


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man (man-db)")
def test_man_finds_the_installed_page(prefix):
    """`man ocirt` with the prefix's man directory on the path: what a user types."""
    env = dict(os.environ, MANPATH=str(prefix / "share" / "man"), MANPAGER="cat",
               PAGER="cat", MANWIDTH="80", LC_ALL="C.UTF-8")
    out = subprocess.run(["man", "8", "ocirt-run"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "ocirt-run - create and run a container" in out.stdout
    assert "--bundle value, -b value" in out.stdout


def test_completion_installed(prefix):
    installed = prefix / "share" / "bash-completion" / "completions" / "ocirt"
    with open(os.path.join(REPO, "contrib", "completions", "bash", "ocirt"), "rb") as f:
        assert installed.read_bytes() == f.read()
