"""The ocirt command line: parse, dispatch, and turn errors into one line and an exit code.

The CLI only parses and dispatches. Each command's handler lives in a module that is
imported only when that command runs; the work itself is one call into `ocirt.runtime`.
"""

from __future__ import annotations

import os
import sys

from ocirt.cli.commands import COMMANDS, GLOBAL_FLAGS
from ocirt.cli.parser import Options, check_arg_count, command_help, parse
from ocirt.errors import OcirtError, UnknownCommand, UsageError

# Commands whose failures runc reports as "runc <cmd> failed: <reason>".
_PREFIXED = {"create", "run", "exec", "start"}


class Globals:
    """Global flags, shared by every command."""

    __slots__ = ("root", "log", "log_format", "debug", "systemd_cgroup", "rootless", "criu")

    def __init__(self, opts: Options) -> None:
        self.root = opts.root or default_root(opts)
        self.log = opts.log
        self.log_format = opts.log_format
        self.debug = opts.debug
        self.systemd_cgroup = opts.systemd_cgroup
        self.rootless = opts.rootless
        self.criu = opts.criu


def default_root(opts: Options) -> str:
    """/run/ocirt for root; $XDG_RUNTIME_DIR/ocirt for an unprivileged user (as runc)."""
    if os.geteuid() != 0:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if xdg:
            return os.path.join(xdg, "ocirt")
    return "/run/ocirt"


def run_and_exit() -> None:
    """The console script's entry: run, flush, and leave without the interpreter's
    teardown (a few ms that every engine call would pay)."""
    import gc

    gc.disable()  # no collection pauses; a short-lived process has no cycles worth it
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    from ocirt import log

    argv = sys.argv[1:] if argv is None else argv
    cmd = None
    try:
        gopts, rest = parse(GLOBAL_FLAGS, argv, stop_at_first=True)
        log.configure(gopts.log, gopts.log_format, gopts.debug)
        if gopts.version:
            sys.stdout.write(version_text())
            return 0
        if not rest or rest[0] == "help" or gopts.help:
            return _help(rest[1:] if rest and rest[0] == "help" else [])
        cmd = COMMANDS.get(rest[0])
        if cmd is None:
            raise UnknownCommand(f"No help topic for '{rest[0]}'")
        if not cmd.available:
            raise OcirtError(f"{cmd.name} is not implemented by ocirt")
        opts, args = parse(cmd.flags, rest[1:], interspersed=cmd.interspersed)
        if opts.help:
            sys.stdout.write(command_help(cmd))
            return 0
        check_arg_count(cmd, args)
        handler = _load(cmd.handler)
        g = Globals(gopts)
        if os.geteuid() == 0:
            from ocirt.state import act_as_root_owner

            act_as_root_owner(g.root)
        return int(handler(g, opts, args) or 0)
    except UsageError as exc:
        sys.stderr.write(f"Incorrect Usage: {exc.message}\n\n")
        if cmd is not None:
            sys.stderr.write(command_help(cmd))
        log.fatal(exc.message)
        return exc.exit_code
    except OcirtError as exc:
        msg = exc.message
        if cmd is not None and cmd.name in _PREFIXED:
            msg = f"ocirt {cmd.name} failed: {msg}"
        log.fatal(msg)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug in ocirt: one line, the traceback only with --debug
        log.fatal(f"internal error: {type(exc).__name__}: {exc}")
        if "--debug" in argv:
            import traceback

            traceback.print_exc()
        return 1


def _load(path: str):
    """The handler "module:function"; __import__ rather than importlib, whose package
    import pulls in `warnings` (several ms on every call)."""
    module, _, func = path.partition(":")
    return getattr(__import__(module, fromlist=[func]), func)


def _help(topics: list[str]) -> int:
    if topics:
        cmd = COMMANDS.get(topics[0])
        if cmd is None:
            raise UnknownCommand(f"No help topic for '{topics[0]}'")
        sys.stdout.write(command_help(cmd))
        return 0
    lines = [
        "NAME:",
        "   ocirt - Open Container Initiative runtime",
        "",
        "ocirt runs containers from OCI bundles (a config.json and a root filesystem) and",
        "from SIF images. Its command line is runc's, so engines can use it in runc's place.",
        "",
        "USAGE:",
        "   ocirt [global options] command [command options] [arguments...]",
        "",
        "VERSION:",
        "   " + version_text().replace("\n", "\n   ").rstrip(),
        "",
        "COMMANDS:",
    ]
    seen = set()
    for name, cmd in COMMANDS.items():
        if name != cmd.name or name in seen:
            continue
        seen.add(name)
        lines.append(f"   {name.ljust(11)} {cmd.summary}")
    lines += ["", "GLOBAL OPTIONS:"]
    width = max(len(f.spelled()) for f in GLOBAL_FLAGS) + 2
    for f in GLOBAL_FLAGS:
        lines.append(f"   {f.spelled().ljust(width)}{f.help}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def version_text() -> str:
    """runc's layout: name and version, then component lines engines log verbatim."""
    from ocirt import OCI_VERSION, __version__

    lines = [
        f"ocirt version {__version__}",
        f"spec: {OCI_VERSION}",
        f"python: {sys.version.split()[0]}",
    ]
    seccomp = _libseccomp_version()
    if seccomp:
        lines.append(f"libseccomp: {seccomp}")
    return "\n".join(lines) + "\n"


def _libseccomp_version() -> str:
    """The library's own version, through the one loader (empty when not installed)."""
    from ocirt.errors import OcirtError
    from ocirt.seccomp import libseccomp

    try:
        return libseccomp.version()
    except (OcirtError, AttributeError):
        return ""
