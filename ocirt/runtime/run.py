"""`run`: create + start, and in the foreground wait for the container and exit with its
status (128+n for a signal), forwarding signals to it, as runc does.

In the foreground ocirt is a child subreaper, so the container's init (whose parent, the
intermediate, has exited) is its child: it can wait for it and forward signals. With a
terminal and no --console-socket, ocirt takes the pty master itself and relays between
it and its own stdio.
"""

from __future__ import annotations

import os

from ocirt import log
from ocirt.errors import OcirtError
from ocirt.runtime.create import CreateOptions, create
from ocirt.runtime.start import start
from ocirt.state import Container, Store

_NOT_FORWARDED = (9, 17, 19, 23, 28)  # KILL, CHLD, STOP, URG, WINCH (resizes the pty)


def run(store: Store, cid: str, opts: CreateOptions, detach: bool, keep: bool) -> int:
    from ocirt.runtime.create import load_plan
    from ocirt.state import validate_id

    validate_id(cid)
    loaded = load_plan(opts.bundle, opts)
    terminal = loaded[0].process.terminal
    if detach:
        if terminal and not opts.console_socket:
            raise OcirtError("cannot allocate tty if ocirt will detach without setting "
                             "console socket")
        container = create(store, cid, opts, loaded)
        _start_or_destroy(store, container)
        return 0
    relay_end = console = -1
    if not opts.console_socket and terminal:
        from ocirt.runtime.tty import host_console

        console = host_console()  # before anything exists: runc's check
        relay_end, opts.console_fd = _socketpair()
    try:
        container = create(store, cid, opts, loaded)
    finally:
        if opts.console_fd >= 0:
            os.close(opts.console_fd)
            opts.console_fd = -1
    master = -1
    try:
        if relay_end >= 0:
            master = _receive_master(relay_end)
        forwarder = SignalForwarder(container.pid, master, console)
        _start_or_destroy(store, container)
        status = wait_and_relay(container.pid, master, forwarder)
    finally:
        if relay_end >= 0:
            os.close(relay_end)
    if not keep:
        from ocirt.runtime.delete import destroy

        try:
            with store.lock(cid):
                destroy(store, store.load(cid))
        except OcirtError as exc:
            log.warning(f"delete after run: {exc}")
    return status


def _socketpair() -> tuple[int, int]:
    import _socket

    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    return int(a.detach()), int(b.detach())


def _receive_master(fd: int) -> int:
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


def _start_or_destroy(store: Store, container: Container) -> None:
    try:
        start(store, container.id)
    except BaseException:
        from ocirt.runtime.delete import delete

        try:
            delete(store, container.id, force=True)
        except OcirtError as exc:
            log.warning(f"cleanup after failed start: {exc}")
        raise


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
