"""Choosing and configuring the manager for a new container.

The cgroup path is runc's: `linux.cgroupsPath`, or the container ID when it is empty.
A relative path nests below our own cgroup in each hierarchy (the spec leaves that to
the runtime; runc does the same), except on a unified (v2-only) host, where it nests
below our cgroup's parent, as runc's fs2 driver does: our own cgroup holds processes (us),
and v2 passes memory, io, hugetlb or rdma down only from cgroups without processes, so
a container below it could never have those limits. An absolute path is taken from the
hierarchy's root as seen from our cgroup namespace. `..` cannot climb out of either (the
path is cleaned as if rooted, as runc's CleanPath does).
"""

from __future__ import annotations

import os
import posixpath

from ocirt.cgroups import Manager
from ocirt.cgroups.detect import SYSTEMD_NAME, V1_CONTROLLERS, Hierarchy, Layout, detect
from ocirt.errors import OcirtError
from ocirt.linux.proc import in_user_namespace

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from typing import Any


def for_plan(plan: Any, cid: str, *, systemd: bool = False,
             rootless: bool | str = False) -> Manager:
    from ocirt.cgroups import devices

    rootless_on = resolve_rootless(rootless)
    layout = detect()
    if systemd:
        from ocirt.cgroups.systemd import SystemdManager

        mgr: Manager = SystemdManager.for_path(plan.cgroups_path, cid, layout, rootless_on,
                                               resources=plan.resources)
    else:
        mgr = cgroupfs_manager(layout, plan.cgroups_path, cid, rootless_on)
    if hasattr(mgr, "default_rules"):
        mgr.default_rules = devices.default_rules(plan.devices)  # type: ignore[attr-defined]
    return mgr


def resolve_rootless(value: bool | str) -> bool:
    """--rootless true|false|auto; auto means: not root, or root of a user namespace."""
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    if value != "auto":
        raise OcirtError(f"invalid --rootless value {value!r} (true, false or auto)")
    return os.geteuid() != 0 or in_user_namespace()


def clean_path(path: str) -> tuple[str, bool]:
    """(cleaned path, is absolute); `..` never leaves the root it is relative to."""
    absolute = path.startswith("/")
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    return (cleaned if absolute else cleaned.lstrip("/")), absolute


def cgroup_dir(h: Hierarchy, path: str, absolute: bool, beside: bool = False) -> str:
    """The container's directory in hierarchy `h`; `beside`: a relative path goes below
    our cgroup's parent (unless we are at the top of what the mount shows)."""
    if absolute:
        found = h.dir_of(path)
        if found is None:
            raise OcirtError(f"cgroupsPath {path}: not reachable through the "
                             f"{h.mountpoint} mount (its root is {h.root})")
        return found
    own = h.own_dir()
    if own is None:
        raise OcirtError(f"cannot find our own cgroup {h.own} below {h.mountpoint}")
    if beside and own != h.mountpoint:
        own = posixpath.dirname(own)
    return posixpath.join(own, path) if path else own


def cgroupfs_manager(layout: Layout, cgroups_path: str, cid: str, rootless: bool) -> Manager:
    path, absolute = clean_path(cgroups_path or cid)
    explicit = bool(cgroups_path)
    mode = layout.mode
    if mode == "none":
        if rootless:
            return Manager()
        raise OcirtError("no cgroup filesystem is mounted (looked in /proc/self/mountinfo)")
    if mode == "unified":
        from ocirt.cgroups.v2 import V2Manager

        assert layout.unified is not None
        return V2Manager(cgroup_dir(layout.unified, path, absolute, beside=True),
                         rootless=rootless,
                         explicit=explicit)
    from ocirt.cgroups.v1 import V1Manager

    paths: dict[str, str] = {}
    for h in layout.v1:
        wanted = [c for c in h.controllers if c in V1_CONTROLLERS or c == SYSTEMD_NAME]
        if wanted:
            directory = cgroup_dir(h, path, absolute)
            for controller in wanted:
                paths[controller] = directory
    if layout.unified is not None:  # hybrid: runc joins the same path in cgroup2
        paths[""] = cgroup_dir(layout.unified, path, absolute)
    return V1Manager(paths, rootless=rootless, explicit=explicit)
