"""The syscall seam of the path-handling code (youki's `Syscall` trait, in Python).

The in-root resolver (ocirt.fs.resolve), the console and the mount-destination checks of
ocirt.fs.rootfs make their kernel calls through `current()`, an instance of `Syscalls`,
which does them for real. Tests put a recording fake in its place with `use()` (the fake
lives in tests/: an in-memory tree that can swap a directory for a symlink between any
two calls), so that this security-critical logic is tested without root, including the
races between a check and a use. Nothing else changes with it: everything else calls
os and ocirt.linux.libc directly.
"""

from __future__ import annotations

import os

from ocirt.linux import libc


class Syscalls:
    """The calls, as the real kernel does them; every path is relative to `dir_fd`
    unless it is absolute (the /proc/self/fd/N magic links)."""

    def open(self, path: str, flags: int, mode: int = 0o777, dir_fd: int | None = None) -> int:
        return os.open(path, flags, mode, dir_fd=dir_fd)

    def openat2(self, dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
        return libc.openat2(dirfd, path, flags, mode, resolve)

    def close(self, fd: int) -> None:
        os.close(fd)

    def dup(self, fd: int) -> int:
        return os.dup(fd)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def lstat(self, name: str, dir_fd: int) -> os.stat_result:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)

    def readlink(self, path: str, dir_fd: int | None = None) -> str:
        return os.readlink(path, dir_fd=dir_fd)

    def mkdir(self, name: str, mode: int, dir_fd: int) -> None:
        os.mkdir(name, mode, dir_fd=dir_fd)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None, what: str | None = None) -> None:
        libc.mount(source, target, fstype, flags, data, what=what)


_current = Syscalls()


def current() -> Syscalls:
    return _current


def use(impl: Syscalls) -> Syscalls:
    """Put `impl` in place (tests); returns the one it replaces."""
    global _current
    previous, _current = _current, impl
    return previous
