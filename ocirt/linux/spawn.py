"""Running a host helper program and collecting what it prints, without `subprocess`.

`import subprocess` costs ~8 ms here (it pulls in `re`, `locale`, `signal`'s enums and
more), which `ocirt ps` would pay on every call for one short-lived `ps`. posix_spawnp
and two pipes do the same for a program that reads nothing.
"""

from __future__ import annotations

import os


def capture(argv: list[str]) -> tuple[int, str, str]:
    """Run `argv` (looked up on PATH) with stdin from /dev/null and no fd of ours but
    its stdout and stderr; its exit code (negative: killed by that signal), stdout and
    stderr. FileNotFoundError when there is no such program."""
    import select

    _no_inheritable_fds()
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    pending = set(chunks)
    while pending:
        for fd, _ in poller.poll():
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                poller.unregister(fd)
                pending.discard(fd)
                os.close(fd)
    _, status = os.waitpid(pid, 0)
    return (os.waitstatus_to_exitcode(status),
            b"".join(chunks[out_r]).decode(errors="replace"),
            b"".join(chunks[err_r]).decode(errors="replace"))


def _no_inheritable_fds() -> None:
    """Mark every fd above stderr close-on-exec (engines leave stray ones open in us;
    subprocess would close them in the child)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory's own fd, closed meanwhile
