"""A private procfs for the runtime's own writes into /proc (sysctls, LSM attributes).

The container controls the mounts below its /proc: a bind mount of one procfs file over
another (a hook can make one) would redirect a write aimed at /proc/sys/... or
/proc/self/attr/... to a different procfs file, and the file would still be on procfs
(CVE-2025-52881). So these writes go through a procfs mount nobody else can see: a new
instance (fsopen), else a detached copy of the procfs mount at /proc without any of its
submounts (open_tree OPEN_TREE_CLONE), checked to be the root of a procfs. Files are
opened beneath it without crossing a mount or following a symlink. With neither, the
caller is refused: never the container's /proc path (fail closed).
"""

from __future__ import annotations

import errno
import os

from ocirt.errors import OcirtError, errno_text
from ocirt.linux import consts as c
from ocirt.linux import libc

PROC_ROOT_INO = 1


def private_root() -> int:
    """An fd of the root of a procfs mount no one else can see or change."""
    reasons = []
    try:
        fs = libc.fsopen("proc", c.FSOPEN_CLOEXEC)
        try:
            libc.fsconfig(fs, c.FSCONFIG_CMD_CREATE)
            fd = libc.fsmount(fs, c.FSMOUNT_CLOEXEC, c.MOUNT_ATTR_NOSUID | c.MOUNT_ATTR_NODEV
                              | c.MOUNT_ATTR_NOEXEC)
        finally:
            os.close(fs)
        return _verified_root(fd)
    except OSError as exc:
        reasons.append(f"new procfs: {errno_text(exc.errno or 0)}")
    try:
        fd = libc.open_tree(c.AT_FDCWD, "/proc", c.OPEN_TREE_CLONE | c.OPEN_TREE_CLOEXEC)
        return _verified_root(fd)
    except OSError as exc:
        reasons.append(f"clone of /proc: {errno_text(exc.errno or 0)}")
    raise OcirtError("no private procfs (" + "; ".join(reasons) + "), and the "
                     "container's /proc could redirect the runtime's writes (CVE-2025-52881)")


def _verified_root(fd: int) -> int:
    try:
        if libc.fstatfs_type(fd) == c.PROC_SUPER_MAGIC and os.fstat(fd).st_ino == PROC_ROOT_INO:
            return fd
    except OSError:
        pass
    os.close(fd)
    raise OSError(errno.EXDEV, "not the root of a procfs")


def open_beneath(root: int, rel: str, flags: int) -> int:
    """`rel` below the private procfs `root`: no mount crossed, no symlink followed, and
    the file checked to be on procfs."""
    fd = libc.openat2(root, rel, flags | os.O_CLOEXEC, 0,
                      c.RESOLVE_BENEATH | c.RESOLVE_NO_XDEV | c.RESOLVE_NO_SYMLINKS)
    if libc.fstatfs_type(fd) != c.PROC_SUPER_MAGIC:
        os.close(fd)
        raise OSError(errno.EXDEV, "not on procfs")
    return fd


def write(rel: str, value: str) -> None:
    """Write `value` to `rel` of a private procfs, in one write(2). OSError on failure;
    OcirtError when no private procfs can be had."""
    root = private_root()
    try:
        fd = open_beneath(root, rel, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    finally:
        os.close(root)
