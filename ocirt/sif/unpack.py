"""Extracting an image's root partition onto the host (`sif bundle --unpack`) without
letting the image's content act on the host.

An image is untrusted, and the host filesystem the bundle lands on is neither nodev nor
nosuid. Extracted as it is, an image could leave a world-writable device node (a
`c 1 1`, /dev/mem), a setuid-root copy of a shell or a binary with file capabilities
where any local user can reach them. So:

* unsquashfs runs without CAP_MKNOD (dropped from its bounding set before execve): the
  kernel itself refuses every character and block device, whatever the image's names;
* only `user.*` extended attributes are extracted: no `security.capability` (file
  capabilities), `security.selinux` or `trusted.*` (overlayfs) from the image;
* the tree is extracted inside a directory only its owner can enter, and walked before
  it becomes reachable: setuid and setgid bits come off every file, any file capability
  that got through comes off, and a device node (which cannot happen) fails the unpack.

`device_nodes` is the check `create` makes on such a bundle later: a container with
CAP_MKNOD can write device nodes into its writable unpacked root, and they would be
there on the host for the next container.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from typing import Any

from ocirt.errors import os_error_text
from ocirt.sif.image import Image, SIFError

CAP_MKNOD = 27
CAP_SETFCAP = 31
_FILE_CAPS = "security.capability"
_STRIPPED_BITS = stat.S_ISUID | stat.S_ISGID
# What unsquashfs says for each device it could not create (names may hold newlines).
_DEVICE_REFUSED = re.compile(r"create_inode: failed to create (character|block) device "
                             r".*?, because Operation not permitted\n", re.DOTALL)


def unpack_partition(image: Image, layer: Any, dest: str, progress: bool = False) -> None:
    """Extract a squashfs layer (ocirt.sif.mount.Layer) of the open image into `dest`
    (which must not exist; its parent should be private to us), then make the tree
    safe (`sanitize_tree`). With `progress` unsquashfs draws its bar on stderr."""
    if layer.fs != "squashfs":
        raise SIFError("only squashfs partitions can be unpacked")
    binary = shutil.which("unsquashfs")
    if binary is None:
        raise SIFError("--unpack needs unsquashfs (apt install squashfs-tools)")
    argv = [binary, "-f", "-o", str(layer.offset), "-d", dest,
            "-user-xattrs" if os.geteuid() == 0 else "-no-xattrs"]
    if not progress:
        argv.append("-no-progress")
    argv.append(f"/dev/fd/{image.fd}")  # the file we opened, whatever the path is now
    _run_unsquashfs(argv, image.fd, progress)
    sanitize_tree(dest)


def _drop_device_caps() -> None:
    """In the child, before execve: without CAP_MKNOD in the bounding set, root's
    execve gives unsquashfs no CAP_MKNOD (nor CAP_SETFCAP) at all."""
    from ocirt.linux import consts, libc

    for cap in (CAP_MKNOD, CAP_SETFCAP):
        libc.prctl(consts.PR_CAPBSET_DROP, cap)


def _run_unsquashfs(argv: list[str], image_fd: int, progress: bool) -> None:
    import tempfile

    root = os.geteuid() == 0
    with tempfile.TemporaryFile() as err:
        try:
            res = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                 stdout=2 if progress else subprocess.DEVNULL, stderr=err,
                                 check=False, pass_fds=(image_fd,),
                                 preexec_fn=_drop_device_caps if root else None)
        except subprocess.SubprocessError as exc:  # the capability drop failed
            raise SIFError(f"unsquashfs: cannot drop CAP_MKNOD: {exc}") from None
        err.seek(0)
        text = err.read().decode(errors="replace")
    if res.returncode == 0:
        return
    rest = _DEVICE_REFUSED.sub("", text)
    lines = [ln for ln in rest.splitlines() if ln.strip()]
    if res.returncode == 2 and not lines:
        return  # the only errors were the device nodes we refused to create
    raise SIFError(f"unsquashfs failed: {lines[-1] if lines else res.returncode}")


def sanitize_tree(top: str) -> None:
    """Strip setuid/setgid bits and file capabilities from every file below `top`;
    a device node there is an error (it is removed, and the unpack fails)."""
    devices: list[str] = []
    _sanitize_dir(top, devices)
    if devices:
        raise SIFError(f"unpacked image holds device node {devices[0]!r} (and "
                       f"{len(devices) - 1} more): refusing it")


def _sanitize_dir(path: str, devices: list[str]) -> None:
    try:
        entries = list(os.scandir(path))
    except OSError as exc:
        raise SIFError(f"unpack: {os_error_text(exc)}") from None
    for entry in entries:
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            _sanitize_dir(entry.path, devices)
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                os.unlink(entry.path)
                devices.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                _sanitize_file(entry.path, st.st_mode)
        except OSError as exc:
            raise SIFError(f"unpack: {os_error_text(exc)}") from None


def _sanitize_file(path: str, mode: int) -> None:
    if mode & _STRIPPED_BITS:
        os.chmod(path, stat.S_IMODE(mode) & ~_STRIPPED_BITS)  # a regular file: no link
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return  # a filesystem without xattrs holds no file capabilities either
    if _FILE_CAPS in names:
        os.removexattr(path, _FILE_CAPS, follow_symlinks=False)


def device_nodes(rootfs: str, hidden: tuple[str, ...] = ()) -> list[str]:
    """Character and block devices below `rootfs` (paths inside it, "/dev/mem"),
    not descending into the directories in `hidden` (in-root paths that a mount of the
    container's covers, such as its /dev tmpfs)."""
    found: list[str] = []
    _find_devices(rootfs, "", set(hidden), found)
    return found


def _find_devices(path: str, inner: str, hidden: set[str], found: list[str]) -> None:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        name = f"{inner}/{entry.name}"
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            if name not in hidden:
                _find_devices(entry.path, name, hidden, found)
        elif not entry.is_file(follow_symlinks=False):
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                found.append(name)
