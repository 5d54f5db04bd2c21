"""Mounts below a container's rootfs (or state directory) in the host's mount namespace.

A container without a mount namespace of its own mounts into ours; `create` records what
it found, `delete` detaches what is new. Apart from ocirt.runtime.create because every
`delete` asks (is anything still mounted below the state directory?) and the create code
imports the spec planner; ctypes (ocirt.linux.libc) is imported only to unmount.
"""

from __future__ import annotations

from ocirt import log

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any


def host_mounts_below(rootfs: str) -> list[list[Any]]:
    """[mount id, mount point] of every mount below `rootfs` in our mount namespace, in
    mount order (for containers without a mount namespace of their own)."""
    from ocirt.linux.mountinfo import mounts

    prefix = rootfs.rstrip("/") + "/"
    return [[m.id, m.mountpoint] for m in mounts() if m.mountpoint.startswith(prefix)]


def unmount_host_mounts(recorded: list[list[Any]]) -> None:
    """Detach the recorded mounts, newest first, if they are still the same mounts."""
    if not recorded:
        return
    from ocirt.linux import consts, libc

    current = {m[0]: m[1] for m in host_mounts_below("/")}
    for mount_id, mountpoint in reversed(recorded):
        if current.get(mount_id) == mountpoint:
            try:
                libc.umount(mountpoint, consts.MNT_DETACH | consts.UMOUNT_NOFOLLOW)
            except OSError as exc:
                log.warning(f"unmount {mountpoint}: {exc.strerror}")
