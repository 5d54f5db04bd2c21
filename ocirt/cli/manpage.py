"""Man pages from the command table: ocirt(8) and one ocirt-COMMAND(8) per command.

Why generated: `--help`, the bash completion and the pages all read ocirt/cli/commands.py
(and the `sif` subcommands of ocirt/cli/sif.py), so a flag added there reaches every one of
them; tests/cli/test_manpage.py fails when contrib/man/ is stale. The output is
deterministic (no date, no host details) so that the committed pages can be compared.

    python -m ocirt.cli.manpage DIR     write ocirt.8 and ocirt-*.8 into DIR
"""

from __future__ import annotations

import os
import sys

from ocirt import __version__
from ocirt.cli.commands import COMMANDS, DESCRIPTION, GLOBAL_FLAGS, SUMMARY
from ocirt.cli.parser import BOOL, LIST, Command, Flag

_SECTION = "8"
_HEADER = '.TH {name} {section} "" "ocirt {version}" "System Manager\'s Manual"\n.nh\n.ad l\n'


def escape(text: str) -> str:
    """Roff-safe text: backslashes and hyphens escaped (so `--root` stays ASCII minus
    signs that copy and paste), and a line starting with `.` or `'` not taken as a
    request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + ln if ln[:1] in (".", "'") else ln for ln in text.split("\n"))


def spellings(flag: Flag) -> list[str]:
    """The flag as typed: `--name` for long names, `-x` for one-letter ones."""
    return [("-" if len(n) == 1 else "--") + n for n in flag.names]


def _flag_item(flag: Flag) -> str:
    value = "" if flag.kind == BOOL else f" \\fI{escape(flag.metavar)}\\fR"
    head = ", ".join(f"\\fB{escape(s)}\\fR{value}" for s in spellings(flag))
    body = escape(flag.help) if flag.help else ""
    if flag.kind == LIST:
        body += " (may be repeated)"
    return f".TP\n{head}\n{body}\n"


def _options(title: str, flags: tuple[Flag, ...]) -> str:
    if not flags:
        return ""
    return f".SH {title}\n" + "".join(_flag_item(f) for f in flags)


def _paragraphs(text: str) -> str:
    """Help text wrapped for a terminal is one paragraph for roff, which refills it."""
    return escape(" ".join(text.split())) + "\n"


def _synopsis(prog: str, cmd: Command) -> str:
    usage = f" {escape(cmd.usage)}" if cmd.usage else ""
    opts = " [\\fIcommand options\\fR]" if cmd.flags else ""
    return f".SH SYNOPSIS\n\\fB{escape(prog)} {escape(cmd.name)}\\fR{opts}{usage}\n"


def unique_commands() -> list[Command]:
    """Each command once, in the table's order (aliases point at the same Command)."""
    seen: list[Command] = []
    for cmd in COMMANDS.values():
        if cmd not in seen:
            seen.append(cmd)
    return seen


def page_name(cmd: Command) -> str:
    return f"ocirt-{cmd.name}"


def main_page() -> str:
    """ocirt(8): what the runtime is, the global options, and the list of commands."""
    out = [_HEADER.format(name="OCIRT", section=_SECTION, version=__version__)]
    out.append(f".SH NAME\nocirt \\- {escape(SUMMARY)}\n")
    out.append(".SH SYNOPSIS\n\\fBocirt\\fR [\\fIglobal options\\fR] \\fIcommand\\fR "
               "[\\fIcommand options\\fR] [\\fIarguments\\fR...]\n")
    out.append(".SH DESCRIPTION\n" + _paragraphs(DESCRIPTION))
    out.append(".PP\nGlobal options come before the command. A flag is written "
               "\\fB\\-\\-name value\\fR, \\fB\\-\\-name=value\\fR, \\fB\\-name value\\fR "
               "or, for one\\-letter names, \\fB\\-x value\\fR; \\fB\\-\\-\\fR ends the "
               "flags. \\fBocirt help\\fR \\fIcommand\\fR and \\fBocirt\\fR \\fIcommand\\fR "
               "\\fB\\-\\-help\\fR print a command's options.\n")
    out.append(".SH COMMANDS\n")
    for cmd in unique_commands():
        out.append(f".TP\n\\fB{escape(cmd.name)}\\fR\n{escape(cmd.summary)}; see "
                   f"\\fB{escape(page_name(cmd))}\\fR({_SECTION}).\n")
    out.append(_options("GLOBAL OPTIONS", GLOBAL_FLAGS))
    out.append(".SH ENVIRONMENT\n.TP\n\\fBXDG_RUNTIME_DIR\\fR\nWhere an unprivileged "
               "user (or uid 0 in a user namespace) keeps container state, as "
               "\\fI$XDG_RUNTIME_DIR/ocirt\\fR, unless \\fB\\-\\-root\\fR is given.\n")
    out.append(".SH FILES\n.TP\n\\fI/run/ocirt\\fR\nThe default state root for root.\n")
    out.append(".SH EXIT STATUS\n0 on success; 1 when a command fails or its usage is "
               "wrong; 3 for an unknown command; \\fBexec\\fR exits 255 when it cannot "
               "start the process. \\fBrun\\fR and \\fBexec\\fR without \\fB\\-\\-detach\\fR "
               "exit with the container process's status. The codes are runc's.\n")
    out.append(_see_also(None))
    return "".join(out)


def command_page(cmd: Command) -> str:
    """ocirt-COMMAND(8): the same name, usage, description and options as `--help`."""
    upper = page_name(cmd).upper()
    out = [_HEADER.format(name=escape(upper), section=_SECTION, version=__version__)]
    out.append(f".SH NAME\n{escape(page_name(cmd))} \\- {escape(cmd.summary)}\n")
    out.append(_synopsis("ocirt", cmd))
    description = cmd.description or cmd.summary[:1].upper() + cmd.summary[1:] + "."
    out.append(".SH DESCRIPTION\n" + _paragraphs(description))
    if cmd.aliases:
        out.append(".PP\nAlso called " + ", ".join(f"\\fB{escape(a)}\\fR" for a in
                                                   cmd.aliases) + ".\n")
    if not cmd.available:
        out.append(".PP\nocirt does not implement this command: it exits with an error, "
                   "as engines that probe for it expect.\n")
    out.append(_options("OPTIONS", cmd.flags))
    if cmd.name == "sif":
        out.append(_sif_subcommands())
    out.append(".PP\nThe global options of \\fBocirt\\fR(8) come before the command name.\n")
    out.append(_see_also(cmd))
    return "".join(out)


def _sif_subcommands() -> str:
    """`ocirt sif` has its own table of subcommands, each with flags: one section each."""
    from ocirt.cli.sif import SUBCOMMANDS

    out = [".SH SUBCOMMANDS\n"]
    for sub in SUBCOMMANDS.values():
        usage = f" {escape(sub.usage)}" if sub.usage else ""
        opts = " [\\fIoptions\\fR]" if sub.flags else ""
        out.append(f".SS {escape(sub.name)}\n\\fBocirt sif {escape(sub.name)}\\fR"
                   f"{opts}{usage}\n.PP\n{escape(sub.summary)}.\n")
        if sub.description:
            out.append(".PP\n" + _paragraphs(sub.description))
        for flag in sub.flags:
            out.append(_flag_item(flag))
    return "".join(out)


def _see_also(cmd: Command | None) -> str:
    refs = [] if cmd is None else [f"\\fBocirt\\fR({_SECTION})"]
    refs += ["\\fBrunc\\fR(8)", "\\fBpodman\\fR(1)"]
    return ".SH SEE ALSO\n" + ", ".join(refs) + "\n"


def pages() -> dict[str, str]:
    """File name -> roff text, for ocirt.8 and every command's page."""
    result = {f"ocirt.{_SECTION}": main_page()}
    for cmd in unique_commands():
        result[f"{page_name(cmd)}.{_SECTION}"] = command_page(cmd)
    return result


def write(directory: str) -> list[str]:
    """Write every page into `directory` (created if missing); return the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, text in pages().items():
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("usage: python -m ocirt.cli.manpage DIR\n")
        return 1
    try:
        write(argv[0])
    except OSError as exc:
        sys.stderr.write(f"ocirt.cli.manpage: {argv[0]}: {exc.strerror}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
