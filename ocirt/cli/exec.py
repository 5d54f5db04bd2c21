"""Handler for `exec`."""

from __future__ import annotations

from ocirt.cli.parser import Options
from ocirt.state import Store

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from ocirt.cli import Globals


def exec_(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.exec import ExecOptions, exec_process

    given = opts.given
    eopts = ExecOptions(
        process_file=opts.process, args=args[1:],
        tty=opts.tty if "tty" in given else None,
        cwd=opts.cwd, env=opts.env, user=opts.user, additional_gids=opts.additional_gids,
        caps=opts.cap, no_new_privs=opts.no_new_privs if "no_new_privs" in given else None,
        apparmor=opts.apparmor, process_label=opts.process_label, detach=opts.detach,
        pid_file=opts.pid_file, console_socket=opts.console_socket,
        preserve_fds=opts.preserve_fds, cgroup=opts.cgroup, ignore_paused=opts.ignore_paused,
    )
    return exec_process(Store(g.root), args[0], eopts)
