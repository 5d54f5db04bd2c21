"""contrib/completions/bash/ocirt: generated from the command table, and working in bash."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ocirt.cli.commands import COMMANDS, GLOBAL_FLAGS
from ocirt.cli.completion import BEGIN, END, render
from ocirt.cli.sif import SUBCOMMANDS

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "contrib", "completions", "bash",
                      "ocirt")


def spelled(flag) -> set[str]:
    return {("-" if len(n) == 1 else "--") + n for n in flag.names}


def script() -> str:
    with open(SCRIPT) as f:
        return f.read()


def complete(*words: str) -> list[str]:
    """COMPREPLY for the command line `words` (the last one being completed), with a fake
    `ocirt list -q` that knows containers c1 and c2."""
    words_q = " ".join(f"'{w}'" for w in words)
    program = (f"source {SCRIPT}; ocirt() {{ printf 'c1\\nc2\\n'; }}; COMP_WORDS=({words_q}); "
               "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _ocirt; printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return [w for w in out.stdout.split("\n") if w]


def test_generated_block_is_fresh(tmp_path):
    """The committed block is what `python -m ocirt.cli.completion FILE` writes: a command
    or flag changed in the table without regenerating fails here."""
    copy = tmp_path / "ocirt"
    copy.write_text(script())
    out = subprocess.run([sys.executable, "-m", "ocirt.cli.completion", str(copy)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert copy.read_text() == script(), "stale: python -m ocirt.cli.completion " + SCRIPT
    assert script().count(BEGIN) == 1 and script().count(END) == 1
    assert render(script().replace(" --curve", "")) == script()


def bash_value(setup: str, variable: str) -> set[str]:
    """A variable's words after sourcing the script and running `setup` in bash."""
    program = f'source {SCRIPT}; {setup}; printf "%s\\n" {variable}'
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.skipif(not os.path.exists("/bin/bash"), reason="needs bash")
def test_every_command_and_flag_is_listed():
    """What bash sees, command by command: every name and flag spelling of the table."""
    assert bash_value(":", "$_ocirt_commands") == set(COMMANDS) | {"help"}
    assert bash_value(":", "$_ocirt_global_flags") == set().union(
        *(spelled(f) for f in GLOBAL_FLAGS)) | {"--help", "-h"}
    for name, cmd in COMMANDS.items():
        got = bash_value(f"_ocirt_command_flags {name}", "$flags")
        assert got == set().union(*(spelled(f) for f in cmd.flags)), name
    assert bash_value(":", "$_ocirt_sif_subcommands") == set(SUBCOMMANDS) | {"help"}
    for name, sub in SUBCOMMANDS.items():
        got = bash_value(f"_ocirt_sif_flags {name}", "$sif_flags")
        assert got == set().union(*(spelled(f) for f in sub.flags)), f"sif {name}"


@pytest.mark.skipif(not os.path.exists("/bin/bash"), reason="needs bash")
def test_completes_in_bash():
    assert complete("ocirt", "st") == ["start", "state"]
    assert complete("ocirt", "--root", "/x", "kill", "") == ["c1", "c2"]
    assert complete("ocirt", "kill", "c1", "KI") == ["KILL"]
    assert complete("ocirt", "exec", "--cw") == ["--cwd"]
    assert complete("ocirt", "--log-format", "") == ["text", "json"]
    assert complete("ocirt", "list", "-f", "j") == ["json"]
    assert complete("ocirt", "--log", "/tmp/x", "del") == ["delete"]
    assert "setprim" in complete("ocirt", "sif", "s")
    assert complete("ocirt", "sif", "keygen", "--c") == ["--curve"]
    assert complete("ocirt", "sif", "bundle", "--writable") == ["--writable", "--writable-tmpfs"]
    assert complete("ocirt", "start", "") == ["c1", "c2"]
    assert complete("ocirt", "list", "") == []
