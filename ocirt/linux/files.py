"""Opening a file that a user or an image names, where only a regular file makes sense
(an image, a key, a JSON document, a blob).

A plain open(2) of a FIFO blocks until some writer appears (forever, for a FIFO nobody
writes), and opening a device can have side effects (a tape rewinds, a tty becomes our
controlling terminal). So the path is stat'ed first, opened with O_NONBLOCK|O_NOCTTY,
and the opened file checked again with fstat (the path may have been swapped between
the two).
"""

from __future__ import annotations

import os
import stat

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"))


class NotRegularFile(OSError):
    """The path names something other than a regular file; str() says what it is."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(f"not a regular file ({kind_of(mode)})")
        self.filename = path
        self.mode = mode
        self.reason = f"not a regular file ({kind_of(mode)})"

    def __str__(self) -> str:
        return self.reason


def kind_of(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def open_regular(path: str, flags: int = os.O_RDONLY) -> int:
    """An fd (close-on-exec, blocking again) of the regular file at `path`; OSError from
    the open, or NotRegularFile (an OSError) for anything that is not a regular file.
    Symlinks are followed: the caller chose the path."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, mode)
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int | None = None) -> bytes:
    """The contents of the regular file at `path` (at most `limit` + 1 bytes, so that the
    caller can tell a file over its limit)."""
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read() if limit is None else f.read(limit + 1)
    finally:
        os.close(fd)


def read_to_end(fd: int) -> bytes:
    """Everything left on `fd` (a pipe until its writers are gone, a file from its
    offset): the child-to-parent error and output channels read this way."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
