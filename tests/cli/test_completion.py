"""contrib/completions/bash/ocirt: in step with the command table, and working in bash."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from ocirt.cli.commands import COMMANDS, GLOBAL_FLAGS
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


def test_every_command_and_flag_is_listed():
    text = script()
    commands = re.search(r'local commands="([^"]*)"', text).group(1).split()
    assert set(commands) >= set(COMMANDS)
    global_flags = set(re.search(r'local global_flags="([^"]*)"', text).group(1).split())
    assert global_flags >= set().union(*(spelled(f) for f in GLOBAL_FLAGS))
    for name, cmd in COMMANDS.items():
        m = re.search(rf'^\s+{re.escape(name)}\) flags="([^"]*)"', text, re.M)
        assert m, f"no completion for {name}"
        assert set(m.group(1).split()) == set().union(*(spelled(f) for f in cmd.flags)), name
    for sub in SUBCOMMANDS:
        assert re.search(rf"compgen -W \"[^\"]*\b{sub}\b", text), f"sif {sub}"


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
