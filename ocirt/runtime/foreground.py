"""Waiting for a container's process in the foreground (`run`, `exec`, `restore`):
forwarding our signals to it, taking its terminal's master, and its exit status as
runc reports it (128+n for a signal).

A module of its own so that `exec` (on every engine's exec, and on every probe) loads
this and not the create and start code that `run` also needs.
"""

from __future__ import annotations

import os

from ocirt.errors import OcirtError

_NOT_FORWARDED = (9, 17, 19, 23, 28)  # KILL, CHLD, STOP, URG, WINCH (resizes the pty)


def socketpair() -> tuple[int, int]:
    import _socket

    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    return int(a.detach()), int(b.detach())


def receive_master(fd: int) -> int:
    import _socket
    import struct

    sock = _socket.socket(fileno=os.dup(fd))
    try:
        _, anc, _, _ = sock.recvmsg(4096, _socket.CMSG_SPACE(4))
    finally:
        sock.close()
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(data) >= 4:
            return int(struct.unpack("i", data[:4])[0])
    raise OcirtError("the container did not send its terminal")


class SignalForwarder:
    """Forward the signals we receive to the container's init."""

    def __init__(self, pid: int, master: int, console: int = -1) -> None:
        import _signal as signal  # the C module: `signal` builds enums (~3 ms)

        self.pid = pid
        self.master = master
        self.console = console  # our terminal, whose size the container's pty follows
        self.pending: list[int] = []
        for sig in range(1, signal.NSIG):
            if sig in _NOT_FORWARDED or sig in (32, 33):
                continue
            try:
                signal.signal(sig, self._on_signal)
            except (OSError, ValueError):
                pass
        self.attach_terminal(master, console)

    def attach_terminal(self, master: int, console: int) -> None:
        """Follow our terminal's size changes on the container's pty."""
        import _signal as signal  # the C module: `signal` builds enums (~3 ms)

        self.master = master
        self.console = console
        if master >= 0:
            signal.signal(28, self._on_winch)
            self._on_winch(28, None)

    def _on_signal(self, signum: int, frame: object) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def _on_winch(self, signum: int, frame: object) -> None:
        import fcntl

        from ocirt.linux import consts

        try:
            size = fcntl.ioctl(self.console, consts.TIOCGWINSZ, b"\0" * 8)
            if size[:4] != b"\0\0\0\0":  # a terminal without a size keeps consoleSize
                fcntl.ioctl(self.master, consts.TIOCSWINSZ, size)
        except OSError:
            pass


def wait_and_relay(pid: int, master: int, forwarder: SignalForwarder) -> int:
    """Wait for the init (relaying the terminal if we hold its master); its exit code."""
    if master < 0:
        return _wait(pid)
    from ocirt.runtime.tty import relay

    relay(master, pid, forwarder.console)
    return _wait(pid)


def _wait(pid: int) -> int:
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        if reaped == pid:
            return exit_code(status)


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
