"""Idmapped bind mounts (runtime-spec `idmap`/`ridmap`, mount uidMappings/gidMappings).

The mount is prepared on the host side by `create`, before the container exists: a user
namespace carrying the mount's mappings, a detached copy of the source (`open_tree` with
OPEN_TREE_CLONE), `mount_setattr(MOUNT_ATTR_IDMAP)` with that namespace. The init then
only attaches the detached mount at its destination (`move_mount`). It has to be this
way round: idmapping a mount needs CAP_SYS_ADMIN in the user namespace the filesystem
belongs to (the host's), which an init inside a container user namespace no longer has
(runc 1.2 does the same).

The user namespace is made by a short-lived forked child that unshares one; we write its
maps from outside, keep a descriptor of its namespace and let it go. The mount holds its
own reference to the namespace, so the descriptor is closed right after use.
"""

from __future__ import annotations

import errno
import os

from ocirt.errors import OcirtError, errno_text
from ocirt.linux import consts as c
from ocirt.linux import libc, proc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ocirt.spec.plan import Mount, Plan


def prepare(plan: Plan) -> dict[int, int]:
    """Detached, idmapped copies of the sources of the plan's idmapped mounts, keyed by
    the mount's index in `plan.mounts`. On failure nothing stays open."""
    detached: dict[int, int] = {}
    try:
        for i, m in enumerate(plan.mounts):
            if m.idmapped:
                detached[i] = _detached_idmapped(m, i)
    except BaseException:
        close_all(detached)
        raise
    return detached


def close_all(detached: dict[int, int]) -> None:
    for fd in detached.values():
        os.close(fd)
    detached.clear()


def _detached_idmapped(m: Mount, index: int) -> int:
    where = f"mounts[{index}] ({m.destination})"
    if os.geteuid() != 0:
        raise OcirtError(f"{where}: idmapped mounts need root on the host")
    flags = c.OPEN_TREE_CLONE | c.OPEN_TREE_CLOEXEC
    if m.flags & c.MS_REC:
        flags |= c.AT_RECURSIVE
    try:
        tree = libc.open_tree(c.AT_FDCWD, m.source, flags)
    except OSError as exc:
        raise OcirtError(f"{where}: open_tree {m.source}: {errno_text(exc.errno or 0)}") \
            from None
    try:
        userns = user_namespace(m.uid_map or [], m.gid_map or [])
        try:
            setattr_flags = c.AT_EMPTY_PATH | (c.AT_RECURSIVE if m.idmap_recursive else 0)
            libc.mount_setattr(tree, "", setattr_flags, c.MOUNT_ATTR_IDMAP, 0,
                               userns_fd=userns)
        except OSError as exc:
            hint = (" (the filesystem of the source does not support idmapped mounts)"
                    if exc.errno == errno.EINVAL else "")
            raise OcirtError(f"{where}: idmap {m.source}: "
                             f"{errno_text(exc.errno or 0)}{hint}") from None
        finally:
            os.close(userns)
    except BaseException:
        os.close(tree)
        raise
    return tree


def user_namespace(uid_map: list[tuple[int, int, int]],
                   gid_map: list[tuple[int, int, int]]) -> int:
    """A descriptor of a new user namespace with these (inside, outside, size) maps."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            try:
                libc.unshare(c.CLONE_NEWUSER)
            except OSError as exc:
                os.write(ready_w, str(exc.errno or 0).encode())
                raise
            os.write(ready_w, b"ok")
            os.read(done_r, 1)  # until the parent has what it needs
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        answer = os.read(ready_r, 16)
        if answer != b"ok":
            why = errno_text(int(answer)) if answer.isdigit() else "the helper process died"
            raise OcirtError(f"idmapped mount: cannot create a user namespace: {why}")
        for name, entries in (("uid_map", uid_map), ("gid_map", gid_map)):
            proc.write_id_map(pid, name, entries)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)  # the child's read returns: it exits
        os.waitpid(pid, 0)


def attach(detached: int, target: int, destination: str) -> None:
    """Put the prepared mount at `target` (an fd of the destination in the rootfs)."""
    libc.move_mount(detached, "", target, "",
                    c.MOVE_MOUNT_F_EMPTY_PATH | c.MOVE_MOUNT_T_EMPTY_PATH, what=destination)
