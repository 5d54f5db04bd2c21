"""The bash completion's data, generated from the command table.

contrib/completions/bash/ocirt is hand-written bash (how to find the command, when to
offer container IDs, files or signals) around one generated block: the commands, the
global flags, each command's flags and the `sif` subcommands with theirs, as
ocirt/cli/commands.py and ocirt/cli/sif.py define them, the table `--help` and the man
pages read too. tests/cli/test_completion.py fails when the block is stale.

    python -m ocirt.cli.completion FILE     rewrite FILE's generated block in place
"""

from __future__ import annotations

import sys

from ocirt.cli.commands import COMMANDS, GLOBAL_FLAGS
from ocirt.cli.parser import BOOL, Command, Flag

BEGIN = "# BEGIN GENERATED from the command table: python3 -m ocirt.cli.completion FILE\n"
END = "# END GENERATED\n"
_ID = "<container-id>"


def _spelled(flags: tuple[Flag, ...]) -> str:
    return " ".join(("-" if len(n) == 1 else "--") + n for f in flags for n in f.names)


def _takes_id(cmd: Command) -> bool:
    """Offer container IDs for the first argument of a command whose usage starts so."""
    return cmd.available and cmd.usage.startswith(_ID)


def _case(function: str, variable: str, rows: list[tuple[str, str, str]]) -> list[str]:
    lines = [f"{function}() {{", '    case "$1" in']
    for name, flags, extra in rows:
        lines.append(f'    {name}) {variable}="{flags}"{extra} ;;')
    return lines + ["    esac", "}"]


def block() -> str:
    """The generated block, markers included."""
    from ocirt.cli.sif import SUBCOMMANDS

    valued = tuple(f for f in GLOBAL_FLAGS if f.kind != BOOL)
    lines = [
        f'_ocirt_commands="{" ".join([*COMMANDS, "help"])}"',
        f'_ocirt_global_flags="{_spelled(GLOBAL_FLAGS)} --help -h"',
        f'_ocirt_global_valued="{_spelled(valued)}"',
        "# Sets flags (the command's) and takes_id (1: its first argument is a container ID).",
        *_case("_ocirt_command_flags", "flags", [
            (name, _spelled(cmd.flags), f"; takes_id={int(_takes_id(cmd))}")
            for name, cmd in COMMANDS.items()]),
        f'_ocirt_sif_subcommands="{" ".join([*SUBCOMMANDS, "help"])}"',
        "# Sets sif_flags (the flags of `ocirt sif SUBCOMMAND`).",
        *_case("_ocirt_sif_flags", "sif_flags", [
            (name, _spelled(sub.flags), "") for name, sub in SUBCOMMANDS.items()]),
    ]
    return BEGIN + "\n".join(lines) + "\n" + END


def render(script: str) -> str:
    """`script` with its generated block replaced by a fresh one."""
    start = script.find(BEGIN)
    end = script.find(END, start)
    if start < 0 or end < 0:
        raise ValueError("no generated block (the BEGIN/END GENERATED markers)")
    return script[:start] + block() + script[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("usage: python -m ocirt.cli.completion FILE\n")
        return 1
    try:
        with open(argv[0], encoding="utf-8") as f:
            text = render(f.read())
        with open(argv[0], "w", encoding="utf-8") as f:
            f.write(text)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"ocirt.cli.completion: {argv[0]}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
