"""The container's terminal: a pty from the container's own devpts.

The master goes to the engine over the console socket (SCM_RIGHTS, with the pty's name
as payload, as runc sends it); the slave becomes the process's stdio and controlling
terminal and is bind-mounted on /dev/console. The ptmx we open is checked to be a real
devpts ptmx (char 5:2, inode 2, on a devpts filesystem) and the slave is obtained from the master
with TIOCGPTPEER, never by path, so a symlinked /dev/pts/N cannot redirect the console
mount (CVE-2025-52565); /dev/console itself is opened without following a symlink.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import stat
import struct

from ocirt.errors import OcirtError, errno_text
from ocirt.fs import resolve
from ocirt.fs.resolve import fd_path
from ocirt.linux import consts as c
from ocirt.linux import libc, syscalls

PTMX_INO = 2  # a devpts instance's ptmx (runc's checkPtmxHandle)


def open_pty(root_fd: int) -> tuple[int, int, str]:
    """(master, slave, slave name) from the container's /dev/pts/ptmx."""
    try:
        master = resolve.open_in_root(root_fd, "/dev/pts/ptmx",
                                      os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW)
    except OSError as exc:
        raise OcirtError(f"open /dev/pts/ptmx in the container: {exc.strerror}; a terminal "
                         "needs a devpts mount at /dev/pts") from None
    try:
        st = os.fstat(master)
        if (not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(5, 2)
                or st.st_ino != PTMX_INO or libc.fstatfs_type(master) != c.DEVPTS_SUPER_MAGIC):
            raise OcirtError("/dev/pts/ptmx in the container is not a devpts ptmx")
        fcntl.ioctl(master, c.TIOCSPTLCK, struct.pack("i", 0))
        number = struct.unpack("I", fcntl.ioctl(master, c.TIOCGPTN, b"\0" * 4))[0]
        slave = fcntl.ioctl(master, c.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave, f"/dev/pts/{number}"


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, c.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def mount_console(root_fd: int, slave: int) -> None:
    """Bind the slave onto /dev/console (created as an empty file if missing). Its last
    component is never followed: a /dev/console that the image or a hook made a symlink
    is refused, not mounted through (CVE-2025-52565); /dev itself resolves in the root."""
    sc = syscalls.current()
    target = resolve.open_or_create_nofollow(root_fd, "/dev/console", 0o600)
    try:
        mode = sc.fstat(target).st_mode
        if stat.S_ISLNK(mode):
            raise OcirtError("/dev/console in the container is a symlink: refusing to mount "
                             "the console on what it points to (CVE-2025-52565)")
        if not stat.S_ISREG(mode) and not stat.S_ISCHR(mode):
            raise OcirtError("/dev/console in the container is neither a file nor a device")
        sc.mount(fd_path(slave), fd_path(target), None, c.MS_BIND, what="/dev/console")
    finally:
        sc.close(target)


def send_master(sock_fd: int, master: int, name: str) -> None:
    """Queue the master on the console socket; the engine reads it after we exit."""
    sock = _socket.socket(fileno=os.dup(sock_fd))
    try:
        sock.sendmsg([name.encode()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                        struct.pack("i", master))])
    finally:
        sock.close()


def make_controlling(slave: int) -> None:
    """The slave becomes stdin, stdout, stderr and the controlling terminal."""
    for i in range(3):
        os.dup2(slave, i, inheritable=True)
    fcntl.ioctl(0, c.TIOCSCTTY, 0)
    if slave > 2:
        os.close(slave)


def connect_socket(path: str) -> int:
    """An fd connected to the engine's console socket (`--console-socket`), for `create`
    and `exec` alike; the error is runc's."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise OcirtError(f"failed to connect to console socket {path}: "
                         f"{errno_text(exc.errno or 0)}") from None
    return int(sock.detach())
