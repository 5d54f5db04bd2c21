"""Relay between our stdio and a container's pty master (foreground `run`/`exec` with a
terminal and no console socket). Our own terminal is put in raw mode for the duration,
so keys like ^C reach the container's terminal instead of us.

Like runc, we need a terminal of our own for this (`host_console`): without one the
container's shell would read keys from nowhere, or from a terminal it was never given.
"""

from __future__ import annotations

import errno
import os
import select

from ocirt.errors import OcirtError, errno_text


def host_console() -> int:
    """Our terminal: stderr, stdout or stdin if one is a terminal, else the controlling
    terminal (/dev/tty), as runc's initHostConsole; without any, the one-line error runc
    gives (`open /dev/tty: no such device or address`)."""
    for fd in (2, 1, 0):
        if os.isatty(fd):
            return fd
    try:
        return os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise OcirtError(f"open /dev/tty: {errno_text(exc.errno or 0)}") from None


def relay(master: int, pid: int, console: int = 0) -> None:
    saved = _make_raw(console)
    try:
        _pump(master)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(console, termios.TCSADRAIN, saved)


def _make_raw(fd: int):  # type: ignore[no-untyped-def]
    if not os.isatty(fd):
        return None
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    return saved


def _pump(master: int) -> None:
    inputs = [master, 0]
    while True:
        try:
            ready, _, _ = select.select(inputs, [], [])
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError as exc:
                if exc.errno == errno.EIO:  # every slave fd closed: the process is done
                    return
                raise
            if not data:
                return
            _write_all(1, data)
        if 0 in ready:
            try:
                data = os.read(0, 65536)
            except OSError:
                data = b""
            if not data:
                inputs.remove(0)
                continue
            _write_all(master, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except OSError:
            return
