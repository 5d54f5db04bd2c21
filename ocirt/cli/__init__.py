"""The ocirt command line: parse, dispatch, and turn errors into one line and an exit code.

The CLI only parses and dispatches. Each command's handler lives in a module that is
imported only when that command runs; the work itself is one call into `ocirt.runtime`.
"""

from __future__ import annotations

import os
import sys

from ocirt.cli.commands import COMMANDS, DESCRIPTION, GLOBAL_FLAGS, SUMMARY
from ocirt.cli.parser import Command, Options, check_arg_count, command_help, parse
from ocirt.errors import OcirtError, UnknownCommand, UsageError

# Commands whose failures runc reports as "runc <cmd> failed: <reason>".
_PREFIXED = {"create", "run", "exec", "start"}
# runc's exit code when a command's action fails (usage errors keep theirs): `exec` exits
# 255, so that engines can tell "could not start" from "the process exited 1".
_FAILURE_CODES = {"exec": 255}


class Globals:
    """Global flags, shared by every command. The state root is worked out only when a
    command uses it, so `spec`, `features` and `--version` never need XDG_RUNTIME_DIR."""

    __slots__ = ("_root", "log", "log_format", "debug", "systemd_cgroup", "rootless", "criu")

    def __init__(self, opts: Options) -> None:
        self._root = opts.root
        self.log = opts.log
        self.log_format = opts.log_format
        self.debug = opts.debug
        self.systemd_cgroup = opts.systemd_cgroup
        self.rootless = opts.rootless
        self.criu = opts.criu

    @property
    def root(self) -> str:
        if not self._root:
            self._root = default_root()
        return self._root


def default_root() -> str:
    """runc's choice: /run/ocirt for the real root; $XDG_RUNTIME_DIR/ocirt for an
    unprivileged user and for uid 0 inside a user namespace (rootless podman runs the
    runtime so), unless $USER says root there (runc's shouldHonorXDGRuntimeDir)."""
    if not _honors_xdg_runtime_dir():
        return "/run/ocirt"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if not xdg:
        from ocirt.errors import OcirtError

        raise OcirtError("XDG_RUNTIME_DIR is not set: a rootless ocirt keeps its state in "
                         "$XDG_RUNTIME_DIR/ocirt (set it, or pass --root DIR)")
    root = os.path.join(xdg, "ocirt")
    try:  # as runc: 0700, and sticky so that the XDG cleaner never prunes it
        os.makedirs(root, 0o700, exist_ok=True)
        os.chmod(root, 0o1700)
    except OSError as exc:
        from ocirt.errors import OcirtError

        raise OcirtError(f"state root {root} (from XDG_RUNTIME_DIR): "
                         f"{os.strerror(exc.errno or 0)}") from None
    return root


def _honors_xdg_runtime_dir() -> bool:
    if os.geteuid() != 0:
        return True
    from ocirt.linux.proc import in_user_namespace

    if not in_user_namespace():
        return False
    return os.environ.get("USER") != "root"


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
    acting = False  # the handler runs: its failures get the command's failure code
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
        acting = True
        g = Globals(gopts)
        if os.geteuid() == 0 and gopts.root:  # Slurm's cleanup: root on a user's --root
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
        return _failure_code(cmd, acting, exc.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug in ocirt: one line, the traceback only with --debug
        log.fatal(f"internal error: {type(exc).__name__}: {exc}")
        if "--debug" in argv:
            import traceback

            traceback.print_exc()
        return _failure_code(cmd, acting, 1)


def _failure_code(cmd: Command | None, acting: bool, code: int) -> int:
    if acting and cmd is not None and code == 1:
        return _FAILURE_CODES.get(cmd.name, code)
    return code


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
        f"   ocirt - {SUMMARY}",
        "",
        *DESCRIPTION.split("\n"),
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
