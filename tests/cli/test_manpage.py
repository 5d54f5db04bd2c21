"""contrib/man/: generated from the command table, fresh, complete, and rendering cleanly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from ocirt.cli import main
from ocirt.cli.commands import COMMANDS, GLOBAL_FLAGS
from ocirt.cli.manpage import escape, pages, spellings, unique_commands
from ocirt.cli.sif import SUBCOMMANDS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN = os.path.join(REPO, "contrib", "man")


def committed() -> dict[str, str]:
    result = {}
    for name in sorted(os.listdir(MAN)):
        with open(os.path.join(MAN, name), encoding="utf-8") as f:
            result[name] = f.read()
    return result


def in_bold(flag: str) -> str:
    """How a flag spelling appears in a page: bold, hyphens escaped."""
    return f"\\fB{escape(flag)}\\fR"


def test_committed_pages_equal_fresh_ones(tmp_path):
    """`python -m ocirt.cli.manpage DIR` writes exactly what contrib/man/ holds: a flag or
    command changed in the table without regenerating the pages fails here."""
    out = subprocess.run([sys.executable, "-m", "ocirt.cli.manpage", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    fresh = {n: (tmp_path / n).read_text(encoding="utf-8") for n in os.listdir(tmp_path)}
    stale = committed()
    assert sorted(fresh) == sorted(stale), "regenerate: python -m ocirt.cli.manpage contrib/man"
    for name, text in fresh.items():
        assert stale[name] == text, f"{name} is stale: python -m ocirt.cli.manpage contrib/man"


def test_one_page_per_command():
    names = set(pages())
    assert names == {"ocirt.8"} | {f"ocirt-{c.name}.8" for c in unique_commands()}
    assert {c.name for c in unique_commands()} == {c.name for c in COMMANDS.values()}
    main_page = pages()["ocirt.8"]
    for cmd in unique_commands():
        assert f"\\fB{escape(cmd.name)}\\fR\n{escape(cmd.summary)}" in main_page, cmd.name
        assert f"\\fBocirt\\-{escape(cmd.name)}\\fR(8)" in main_page, cmd.name


def test_every_flag_is_in_the_pages():
    texts = pages()
    for flag in GLOBAL_FLAGS:
        for s in spellings(flag):
            assert in_bold(s) in texts["ocirt.8"], s
    for cmd in unique_commands():
        text = texts[f"ocirt-{cmd.name}.8"]
        assert f"ocirt\\-{escape(cmd.name)} \\- {escape(cmd.summary)}" in text
        for flag in cmd.flags:
            for s in spellings(flag):
                assert in_bold(s) in text, f"{cmd.name} {s}"
    sif = texts["ocirt-sif.8"]
    sections = dict(re.findall(r"^\.SS (\S+)\n(.*?)(?=^\.S[SH] |\Z)", sif, re.M | re.S))
    assert set(sections) == set(SUBCOMMANDS)
    for name, sub in SUBCOMMANDS.items():
        for flag in sub.flags:
            for s in spellings(flag):
                assert in_bold(s) in sections[name], f"sif {name} {s}"


@pytest.mark.parametrize("name", [c.name for c in unique_commands() if c.available])
def test_help_and_page_list_the_same_flags(name, capsys):
    """`ocirt COMMAND --help` and its page come from one table: the same flags."""
    assert main([name, "--help"]) == 0
    help_flags = set(re.findall(r"(?:^   |, )(--?[a-z][a-z0-9-]*)", capsys.readouterr().out,
                                re.M))
    page = pages()[f"ocirt-{name}.8"]
    page_flags = {f.replace("\\-", "-") for f in re.findall(r"\\fB(\\-[^\\]*(?:\\-[^\\]*)*)\\fR",
                                                         page.split(".SH SUBCOMMANDS")[0])}
    page_flags -= {"--"}
    assert help_flags == {s for f in COMMANDS[name].flags for s in spellings(f)}
    assert help_flags == page_flags


def test_escaping():
    assert escape("--root") == "\\-\\-root"
    assert escape("a\\b") == "a\\eb"
    assert escape(".x\n'y\nz") == "\\&.x\n\\&'y\nz"


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff (groff-base)")
@pytest.mark.parametrize("name", sorted(os.listdir(MAN)))
def test_page_renders_without_warnings(name):
    out = subprocess.run(["groff", "-man", "-Tutf8", "-ww", os.path.join(MAN, name)],
                         capture_output=True, text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    text = re.sub(r".\x08", "", out.stdout)  # overstrike bold/underline
    assert "NAME" in text and "SYNOPSIS" in text
    if name == "ocirt-run.8":
        # ASCII hyphen-minus, so a flag copied from the page works on the command line
        assert "--bundle value, -b value" in text
        assert "--detach, -d" in text
