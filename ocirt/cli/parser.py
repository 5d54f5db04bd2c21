"""A small command-line parser with runc's (urfave/cli) conventions.

Why not argparse: it costs ~8 ms to import (it pulls in `re` and `gettext`), and engines
run ocirt for every operation. The behaviour copied from runc: global flags come before
the command; a flag is `--name value`, `--name=value`, `-name value` or `-x value`; boolean
flags take an optional `=true|false`; `--` ends the flags; unknown flags and wrong
argument counts are usage errors.
"""

from __future__ import annotations

from ocirt.errors import UsageError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

BOOL, STR, INT, LIST = "bool", "str", "int", "list"
_TRUE = {"1", "t", "true", "y", "yes"}
_FALSE = {"0", "f", "false", "n", "no"}


class Flag:
    """One command-line flag: its spellings, where its value goes, and its kind."""

    __slots__ = ("names", "dest", "kind", "default", "help", "metavar")

    def __init__(
        self,
        names: str,
        kind: str = BOOL,
        help: str = "",
        default: Any = None,
        dest: str | None = None,
        metavar: str = "value",
    ) -> None:
        self.names = tuple(n.strip() for n in names.split(","))
        self.kind = kind
        self.help = help
        self.dest = dest or self.names[0].replace("-", "_")
        if default is None:
            default = {BOOL: False, LIST: None, INT: 0}.get(kind)
        self.default = default
        self.metavar = metavar

    def spelled(self) -> str:
        parts = []
        for n in self.names:
            dash = "-" if len(n) == 1 else "--"
            parts.append(dash + n + ("" if self.kind == BOOL else f" {self.metavar}"))
        return ", ".join(parts)


class Command:
    """A subcommand: its flags, argument count, help, and the handler that runs it.

    `handler` is "module:function", imported only when the command runs, so that
    `ocirt state` never pays for the imports of `ocirt create`.
    """

    __slots__ = (
        "name", "handler", "flags", "min_args", "max_args", "usage", "summary",
        "description", "interspersed", "aliases", "available",
    )

    def __init__(
        self,
        name: str,
        handler: str,
        summary: str,
        usage: str = "",
        flags: tuple[Flag, ...] = (),
        min_args: int = 0,
        max_args: int | None = 0,
        description: str = "",
        interspersed: bool = True,
        aliases: tuple[str, ...] = (),
        available: bool = True,
    ) -> None:
        self.name = name
        self.handler = handler
        self.summary = summary
        self.usage = usage
        self.flags = flags
        self.min_args = min_args
        self.max_args = max_args
        self.description = description
        self.interspersed = interspersed
        self.aliases = aliases
        self.available = available


class Options:
    """Parsed flag values, as attributes named after each flag's `dest`."""

    def __init__(self, flags: tuple[Flag, ...]) -> None:
        for f in flags:
            setattr(self, f.dest, list(f.default) if isinstance(f.default, list) else f.default)
        self.help = False
        self.given: set[str] = set()  # dests set on the command line (runc's IsSet)

    def __repr__(self) -> str:
        return f"Options({vars(self)})"


def _lookup(flags: tuple[Flag, ...], name: str) -> Flag | None:
    for f in flags:
        if name in f.names:
            return f
    return None


def parse_bool(text: str, flag: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise UsageError(f'invalid boolean value "{text}" for -{flag}')


def parse(
    flags: tuple[Flag, ...], argv: list[str], *, interspersed: bool = True,
    stop_at_first: bool = False,
) -> tuple[Options, list[str]]:
    """Parse `argv` against `flags`.

    With `stop_at_first` (global flags) parsing ends at the first positional argument,
    which is returned with everything after it. Without `interspersed`, flags after the
    first positional argument are left to the positional list (exec's command line).
    """
    opts = Options(flags)
    positional: list[str] = []
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        if arg == "--":
            positional.extend(argv[i + 1 :])
            break
        is_flag = arg.startswith("-") and arg != "-" and len(arg) > 1
        if not is_flag or (positional and not interspersed):
            if stop_at_first:
                return opts, argv[i:]
            positional.append(arg)
            if not interspersed:
                positional.extend(argv[i + 1 :])
                break
            i += 1
            continue
        body = arg.lstrip("-")
        name, eq, value = body.partition("=")
        if name in ("h", "help"):
            opts.help = True
            i += 1
            continue
        flag = _lookup(flags, name)
        if flag is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        opts.given.add(flag.dest)
        if flag.kind == BOOL:
            setattr(opts, flag.dest, parse_bool(value, name) if eq else True)
        else:
            if not eq:
                i += 1
                if i >= n:
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            _store(opts, flag, name, value)
        i += 1
    return opts, positional


def _store(opts: Options, flag: Flag, name: str, value: str) -> None:
    if flag.kind == INT:
        try:
            setattr(opts, flag.dest, int(value, 0))
        except ValueError:
            raise UsageError(f'invalid value "{value}" for flag -{name}: parse error') from None
    elif flag.kind == LIST:
        current = getattr(opts, flag.dest) or []
        current.append(value)
        setattr(opts, flag.dest, current)
    else:
        setattr(opts, flag.dest, value)


def check_arg_count(cmd: Command, args: list[str]) -> None:
    """runc's messages for too few or too many arguments."""
    if cmd.min_args == cmd.max_args and len(args) != cmd.min_args:
        raise UsageError(f'ocirt: "{cmd.name}" requires exactly {cmd.min_args} argument(s)')
    if len(args) < cmd.min_args:
        raise UsageError(f'ocirt: "{cmd.name}" requires a minimum of {cmd.min_args} argument(s)')
    if cmd.max_args is not None and len(args) > cmd.max_args:
        raise UsageError(f'ocirt: "{cmd.name}" requires a maximum of {cmd.max_args} argument(s)')


def command_help(cmd: Command, prog: str = "ocirt") -> str:
    lines = ["NAME:", f"   {prog} {cmd.name} - {cmd.summary}", "", "USAGE:"]
    lines.append(f"   {prog} {cmd.name} [command options] {cmd.usage}".rstrip())
    if cmd.description:
        lines += ["", "DESCRIPTION:", "   " + cmd.description.strip().replace("\n", "\n   ")]
    if cmd.flags:
        lines += ["", "OPTIONS:"]
        width = max(len(f.spelled()) for f in cmd.flags) + 2
        for f in cmd.flags:
            lines.append(f"   {f.spelled().ljust(width)}{f.help}")
    return "\n".join(lines) + "\n"
