"""/dev inside the container: device nodes, the ptmx symlink, and the standard symlinks.

Device nodes are made with mknod; in a user namespace (where mknod is not allowed) the
host's node is bind-mounted instead, as runc does. Paths resolve inside the rootfs: an
image whose /dev is a symlink to a host directory gets nothing written there
(CVE-2026-41579).
"""

from __future__ import annotations

import errno
import os
import stat

from ocirt.errors import OcirtError, os_error_text
from ocirt.fs import resolve
from ocirt.fs.resolve import fd_path
from ocirt.linux import consts as c
from ocirt.linux import libc
from ocirt.spec import options as opt
from ocirt.spec.plan import Device, Plan

_TYPES = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def setup_dev(root_fd: int, plan: Plan, in_userns: bool) -> None:
    old_umask = os.umask(0)
    try:
        for dev in plan.devices:
            if dev.path == "/dev/ptmx":
                continue  # a symlink to the devpts instance, below
            try:
                create_device(root_fd, dev, in_userns)
            except OSError as exc:
                raise OcirtError(f"error creating device nodes: {dev.path}: "
                                 f"{os_error_text(exc)}") from None
    finally:
        os.umask(old_umask)
    _ptmx_symlink(root_fd)
    _dev_symlinks(root_fd)


def create_device(root_fd: int, dev: Device, bind: bool) -> None:
    parent_path, _, name = dev.path.rpartition("/")
    parent = resolve.mkdir_all(root_fd, parent_path or "/")
    try:
        if _existing_matches(parent, name, dev):
            return
        if not bind:
            try:
                os.mknod(name, dev.mode | _TYPES[dev.type], os.makedev(dev.major, dev.minor),
                         dir_fd=parent)
                os.chown(name, dev.uid, dev.gid, dir_fd=parent, follow_symlinks=False)
                return
            except PermissionError:
                pass
        _bind_device(parent, name, dev)
    finally:
        os.close(parent)


def _existing_matches(parent: int, name: str, dev: Device) -> bool:
    """True if the node already exists as this device; an error if something else is
    there (config-linux.md: "a file ... that does not match the requested device")."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if (st.st_mode & 0o170000) == _TYPES[dev.type] and (
            dev.type == "p" or st.st_rdev == os.makedev(dev.major, dev.minor)):
        return True
    raise OSError(errno.EEXIST, f"a different file already exists at {dev.path}")


def _bind_device(parent: int, name: str, dev: Device) -> None:
    """Bind-mount the host's node of the same path (user namespaces cannot mknod). The
    mount point is made with O_EXCL and opened O_PATH|O_NOFOLLOW (never opened for I/O:
    a FIFO put there would block us), and must be a plain file or this very device; the
    source is the host node opened once and checked to be the device asked for."""
    try:
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644, dir_fd=parent))
    except FileExistsError:
        pass
    target = os.open(name, resolve._O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        mode = os.fstat(target).st_mode
        if not stat.S_ISREG(mode) and (mode & 0o170000) != _TYPES[dev.type]:
            raise OSError(errno.EEXIST, f"a different file already exists at {dev.path}")
        source = os.open(dev.path, resolve._O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(source)
            if (st.st_mode & 0o170000) != _TYPES[dev.type] or (
                    dev.type != "p" and st.st_rdev != os.makedev(dev.major, dev.minor)):
                raise OSError(errno.ENODEV, f"the host's {dev.path} is not that device")
            libc.mount(fd_path(source), fd_path(target), None, c.MS_BIND, what=dev.path)
        finally:
            os.close(source)
    finally:
        os.close(target)


def _ptmx_symlink(root_fd: int) -> None:
    dev = resolve.mkdir_all(root_fd, "/dev")
    try:
        try:
            os.unlink("ptmx", dir_fd=dev)
        except FileNotFoundError:
            pass
        os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
    finally:
        os.close(dev)


def _dev_symlinks(root_fd: int) -> None:
    links = list(opt.DEV_SYMLINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "/dev/core"))
    dev = resolve.mkdir_all(root_fd, "/dev")
    try:
        for target, link in links:
            try:
                os.symlink(target, os.path.basename(link), dir_fd=dev)
            except FileExistsError:
                pass
    finally:
        os.close(dev)
