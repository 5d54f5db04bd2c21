"""Loop devices over a byte range of a file (a SIF partition), through ioctl(2).

`attach` finds a free device with LOOP_CTL_GET_FREE and configures it in one step with
LOOP_CONFIGURE (offset, size limit, read-only, autoclear), falling back to LOOP_SET_FD +
LOOP_SET_STATUS64 on kernels older than 5.8. Autoclear makes the kernel detach the
device when its last user goes away (the mount made on it, or our fd if the mount
failed), so a crash between attach and mount cannot leak a device.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from ocirt.errors import OcirtError, os_error_text

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82

LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4

# struct loop_info64: device, inode, rdevice, offset, sizelimit (u64), number,
# encrypt_type, encrypt_key_size, flags (u32), file_name[64], crypt_name[64],
# encrypt_key[32], init[2] (u64).
_INFO64 = struct.Struct("<QQQQQIIII64s64s32sQQ")
# struct loop_config: fd, block_size (u32), info, reserved[8] (u64).
_CONFIG = struct.Struct(f"<II{_INFO64.size}s64s")
_RETRIES = 20


class LoopError(OcirtError):
    """A loop device could not be set up."""


def _info(offset: int, size: int, flags: int, name: str) -> bytes:
    file_name = os.fsencode(name)[-63:]
    return _INFO64.pack(0, 0, 0, offset, size, 0, 0, 0, flags, file_name, b"", b"", 0, 0)


def attach(backing_fd: int, offset: int, size: int, read_only: bool = True,
           name: str = "") -> tuple[str, int]:
    """Attach a free loop device to `size` bytes at `offset` of `backing_fd`.

    Returns (device path, open fd of the device); the caller mounts it and then closes
    the fd. Autoclear is set, so the device detaches itself once unused.
    """
    flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise LoopError(f"open /dev/loop-control: {os_error_text(exc)}") from None
    try:
        for _ in range(_RETRIES):
            number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            path = f"/dev/loop{number}"
            fd = _open_device(path, read_only)
            try:
                if _configure(fd, backing_fd, offset, size, flags, name):
                    return path, fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # someone else took it between GET_FREE and CONFIGURE
    except OSError as exc:
        raise LoopError(f"loop device: {os_error_text(exc)}") from None
    finally:
        os.close(ctl)
    raise LoopError("loop device: no free device after several attempts")


def _open_device(path: str, read_only: bool) -> int:
    mode = os.O_RDONLY if read_only else os.O_RDWR
    try:
        return os.open(path, mode | os.O_CLOEXEC)
    except FileNotFoundError:
        # No udev here: create the node the kernel just allocated (block major 7).
        number = int(path.removeprefix("/dev/loop"))
        os.mknod(path, 0o660 | 0o060000, os.makedev(7, number))
        return os.open(path, mode | os.O_CLOEXEC)


def _configure(fd: int, backing_fd: int, offset: int, size: int, flags: int,
               name: str) -> bool:
    """True when configured; False when the device turned out busy."""
    config = _CONFIG.pack(backing_fd, 0, _info(offset, size, flags, name), b"")
    try:
        fcntl.ioctl(fd, LOOP_CONFIGURE, config)
        return True
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return False
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    try:  # before Linux 5.8
        fcntl.ioctl(fd, LOOP_SET_FD, backing_fd)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return False
        raise
    try:
        fcntl.ioctl(fd, LOOP_SET_STATUS64, _info(offset, size, flags, name))
    except BaseException:
        detach(fd)
        raise
    return True


def detach(fd: int) -> None:
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError:
        pass


def status(path: str) -> tuple[int, int, int] | None:
    """(offset, size limit, flags) of a loop device, None when it is not attached."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_INFO64.size))
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = _INFO64.unpack(raw)
    return fields[3], fields[4], fields[8]
