"""linux.intelRdt: the container's group in the resctrl filesystem (Intel RDT, AMD QoS).

resctrl is cgroup-like but flat: a CTRL_MON group is a directory under the mount point
with a `schemata` file (cache and memory-bandwidth allocations, one resource a line) and
a `tasks` file; a task written there leaves its previous group, and its children inherit
the group. With monitoring, a MON group `mon_groups/<id>` inside it counts the
container's own cache occupancy and bandwidth.

What runc does, and the runtime-spec 1.3 rules:
- resctrl must be mounted (at /sys/fs/resctrl, else wherever mountinfo says), otherwise
  `create` fails before anything exists; so do l3CacheSchema without CAT, memBwSchema
  without MBA and enableMonitoring without monitoring, and a closID without schemata
  whose group was not made beforehand.
- The group is `closID` (`/` is the root group), else the container ID; it is made when
  missing, the schemata lines are written (l3CacheSchema, memBwSchema, then `schemata`),
  then the init's PID. An existing group's schemata are overwritten as runc does (the
  spec's "compare" cannot be done by string: the kernel rewrites what it is given).
- `delete` removes the group only when this container made it and named it after
  itself; a MON group always goes.

The record saved in the container's state (before the first mkdir, so `delete --force`
after a SIGKILL finds it) is {"root", "path", "remove", "mon"}.
"""

from __future__ import annotations

import errno
import os

from ocirt.errors import OcirtError, errno_text
from ocirt.linux import libc

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

    from ocirt.spec.plan import IntelRdt

DEFAULT_ROOT = "/sys/fs/resctrl"
RDTGROUP_SUPER_MAGIC = 0x7655821
# Names in a group directory that are the filesystem's own, never a group.
RESERVED = ("info", "mon_groups", "mon_data", "tasks", "schemata", "cpus", "cpus_list",
            "mode", "size")


def find_root() -> str:
    """The resctrl mount point, or an error saying what is missing."""
    try:
        fd = os.open(DEFAULT_ROOT, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            if libc.fstatfs_type(fd) == RDTGROUP_SUPER_MAGIC:
                return DEFAULT_ROOT
        finally:
            os.close(fd)
    from ocirt.linux.mountinfo import mounts

    for entry in mounts():
        if entry.fstype == "resctrl":
            return entry.mountpoint
    if fd >= 0:
        raise OcirtError("linux.intelRdt: Intel RDT is not enabled: no resctrl filesystem "
                         f"is mounted (mount -t resctrl resctrl {DEFAULT_ROOT})")
    raise OcirtError(f"linux.intelRdt: Intel RDT is not enabled: this kernel or CPU has no "
                     f"resctrl ({DEFAULT_ROOT} does not exist)")


def check(rdt: IntelRdt, root: str, cid: str) -> None:
    """What the host must offer for `rdt`, checked before anything exists."""
    where = "linux.intelRdt"
    info = os.path.join(root, "info")
    if rdt.l3_cache and not has_cat(root):
        raise OcirtError(f"{where}.l3CacheSchema: Intel RDT/CAT is not enabled (no "
                         f"{info}/L3)")
    if rdt.mem_bw and not has_mba(root):
        raise OcirtError(f"{where}.memBwSchema: Intel RDT/MBA is not enabled (no {info}/MB)")
    if rdt.monitoring and not os.path.isdir(os.path.join(root, "mon_groups")):
        raise OcirtError(f"{where}.enableMonitoring: resctrl monitoring is not enabled (no "
                         f"{root}/mon_groups)")
    path = group_path(rdt, root, cid)
    if rdt.clos_id and not rdt.schemata and not os.path.isdir(path):
        raise OcirtError(f"{where}.closID: resctrl group {path} does not exist (it must be "
                         "made beforehand when no schemata are given)")


def has_cat(root: str) -> bool:
    """Cache allocation: info/L3, or L3CODE/L3DATA with code/data prioritization."""
    return any(os.path.isdir(os.path.join(root, "info", name)) for name in ("L3", "L3CODE"))


def has_mba(root: str) -> bool:
    return os.path.isdir(os.path.join(root, "info", "MB"))


def group_path(rdt: IntelRdt, root: str, cid: str) -> str:
    if rdt.clos_id == "/":
        return root
    name = rdt.clos_id or cid
    if name in RESERVED:
        field = "closID" if rdt.clos_id else "closID (the container ID when unset)"
        raise OcirtError(f"linux.intelRdt.{field}: {name!r} is a file of resctrl itself, "
                         "not a group")
    return os.path.join(root, name)


def record(rdt: IntelRdt, root: str, cid: str) -> dict[str, Any]:
    """What `apply` will make, for the container's state (saved before it makes it)."""
    path = group_path(rdt, root, cid)
    mon = os.path.join(path, "mon_groups", cid) if rdt.monitoring else ""
    # Removed on delete only when named after the container and made by it (the spec).
    remove = not rdt.clos_id and not os.path.isdir(path)
    return {"root": root, "path": path, "remove": remove, "mon": mon}


def apply(rdt: IntelRdt, rec: dict[str, Any], pid: int) -> None:
    """Make the group, write its schemata, move `pid` in (and into its MON group)."""
    path = rec["path"]
    if path != rec["root"]:
        _mkdir(rec, path)
    if rdt.schemata:
        _write(rec, os.path.join(path, "schemata"), "\n".join(rdt.schemata) + "\n")
    if rec["mon"]:
        _mkdir(rec, rec["mon"])
    join(rec, pid)


def join(rec: dict[str, Any], pid: int) -> None:
    """Move `pid` into the container's group: the init at create, each `exec` process."""
    _write(rec, os.path.join(rec["path"], "tasks"), f"{pid}\n")
    if rec.get("mon"):
        _write(rec, os.path.join(rec["mon"], "tasks"), f"{pid}\n")


def write_schemata(rec: dict[str, Any], lines: list[str]) -> None:
    """`update --l3-cache-schema/--mem-bw-schema`: new lines for the container's group."""
    _write(rec, os.path.join(rec["path"], "schemata"), "\n".join(lines) + "\n")


def destroy(rec: dict[str, Any]) -> None:
    """Remove what the container made, its MON group first; tasks still in a removed
    group go back to its parent."""
    for path in ([rec["mon"]] if rec.get("mon") else []) + \
            ([rec["path"]] if rec.get("remove") else []):
        _rmdir(path)


def _mkdir(rec: dict[str, Any], path: str) -> None:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as exc:
        hint = " (no CLOSID or RMID is left)" if exc.errno == errno.ENOSPC else ""
        raise OcirtError(f"linux.intelRdt: make resctrl group {path}: "
                         f"{errno_text(exc.errno or 0)}{hint}{_last_status(rec)}") from None


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OcirtError(f"remove resctrl group {path}: {errno_text(exc.errno or 0)}") \
            from None


def _write(rec: dict[str, Any], path: str, text: str) -> None:
    """One write(2), as the kernel parses a schemata file whole; no O_CREAT: in resctrl
    every file exists, and a missing one is an error, not a file to make. O_APPEND is
    `echo >>`: the kernel ignores the offset, and a plain file keeps every write."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise OcirtError(f"linux.intelRdt: write {text.strip()!r} to {path}: "
                         f"{errno_text(exc.errno or 0)}{_last_status(rec)}") from None


def _last_status(rec: dict[str, Any]) -> str:
    """The kernel's own words on the last failed resctrl operation."""
    try:
        with open(os.path.join(rec["root"], "info", "last_cmd_status")) as f:
            status = f.read().strip()
    except OSError:
        return ""
    return f" (last_cmd_status: {status})" if status and status != "ok" else ""
