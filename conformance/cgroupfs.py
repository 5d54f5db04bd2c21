"""The host's cgroup hierarchies as this process sees them, and a process's place in them.

The suite reads container cgroups from the host side: a container process's
`/proc/<pid>/cgroup` (host view, because the test process stays in the host cgroup
namespace) joined to the hierarchy's mount point gives the directory whose files the
kernel enforces. Nothing here creates cgroups; `remove_tree` only removes directories
the caller names (the suite passes only paths carrying its own session token).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: v1 (with controllers/name=) or v2 ("")."""

    mountpoint: str
    fstype: str
    options: tuple[str, ...]  # v1: controllers and name=...; v2: mount options such as nsdelegate
    root: str  # the mount's root inside the hierarchy

    @property
    def key(self) -> str:
        """The key `/proc/<pid>/cgroup` uses: sorted controllers, or "" for cgroup2."""
        return "" if self.fstype == "cgroup2" else ",".join(sorted(self.options))


_V1_MOUNT_FLAGS = {"rw", "ro", "nosuid", "nodev", "noexec", "relatime", "noatime"}


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[Hierarchy]:
    """Every cgroup/cgroup2 mount below /sys/fs/cgroup, in mount order."""
    found = []
    with open(mountinfo) as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields, post_fields = pre.split(), post.split()
            fstype, mountpoint = post_fields[0], fields[4]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            if not (mountpoint == CGROUP_ROOT or mountpoint.startswith(CGROUP_ROOT + "/")):
                continue
            super_opts = post_fields[2].split(",") if len(post_fields) > 2 else []
            opts = tuple(o for o in super_opts if o not in _V1_MOUNT_FLAGS)
            found.append(Hierarchy(mountpoint, fstype, opts, fields[3]))
    return found


def proc_cgroups(pid: int | str = "self") -> dict[str, str]:
    """`/proc/<pid>/cgroup` as {hierarchy key: path}; raises if the process is gone."""
    paths = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, key, path = line.rstrip("\n").split(":", 2)
            paths[",".join(sorted(key.split(","))) if key else ""] = path
    return paths


def v1_hierarchy_for(controller: str) -> Hierarchy | None:
    for h in hierarchies():
        if h.fstype == "cgroup" and controller in h.options:
            return h
    return None


# v1 controllers whose job v2 does in its core files or with an eBPF program
_V2_CORE = ("devices", "freezer")


def is_unified() -> bool:
    """A cgroup v2-only host: a cgroup2 mount and no v1 hierarchy with a controller."""
    found = hierarchies()
    return any(h.fstype == "cgroup2" for h in found) and not any(
        h.fstype == "cgroup" and not all(o.startswith("name=") for o in h.options)
        for h in found)


def v2_controllers() -> set[str]:
    """The controllers the cgroup2 mount offers (its top's cgroup.controllers)."""
    h = unified()
    if h is None:
        return set()
    try:
        return set(read(h.mountpoint, "cgroup.controllers").split())
    except OSError:
        return set()


def hierarchy_for(controller: str) -> Hierarchy | None:
    """Where `controller` lives: its v1 hierarchy, or on a unified host the cgroup2 one
    (devices and freezer included: v2 has them in its core)."""
    if not is_unified():
        return v1_hierarchy_for(controller)
    if controller in v2_controllers() or controller in _V2_CORE:
        return unified()
    return None


def placement_dir(controller: str) -> str | None:
    """Where runc puts a relative cgroupsPath: below our own cgroup, or on a unified host
    below its parent (our own holds processes, so v2 could pass it no controller)."""
    own = own_dir(controller)
    if own is None or not is_unified():
        return own
    h = unified()
    return own if h is None or own == h.mountpoint else os.path.dirname(own)


def unified() -> Hierarchy | None:
    for h in hierarchies():
        if h.fstype == "cgroup2":
            return h
    return None


def host_dir(h: Hierarchy, path: str) -> str:
    """The directory of cgroup `path` (as /proc/<pid>/cgroup shows it) in hierarchy `h`."""
    rel = path
    if h.root != "/" and (path == h.root or path.startswith(h.root + "/")):
        rel = path[len(h.root):]
    return os.path.normpath(h.mountpoint + "/" + rel.lstrip("/"))


def own_dir(controller: str) -> str | None:
    """This process's own cgroup directory in the hierarchy of `controller`."""
    h = hierarchy_for(controller)
    if h is None:
        return None
    return host_dir(h, proc_cgroups()[h.key])


def process_dir(pid: int, controller: str) -> str | None:
    """The cgroup directory of process `pid` in the hierarchy of `controller`."""
    h = hierarchy_for(controller)
    if h is None:
        return None
    return host_dir(h, proc_cgroups(pid)[h.key])


def freezer_state(pid: int) -> str:
    """FROZEN or THAWED (or FREEZING, v1) for the cgroup of `pid`: the v1 freezer's
    freezer.state where the host has that hierarchy, else the unified cgroup's
    cgroup.events (`frozen 1`)."""
    h = hierarchy_for("freezer")
    directory = process_dir(pid, "freezer")
    assert h is not None and directory is not None, f"no freezer cgroup for {pid}"
    if h.fstype != "cgroup2":
        return read(directory, "freezer.state")
    events = dict(line.split() for line in read(directory, "cgroup.events").splitlines())
    return "FROZEN" if events.get("frozen") == "1" else "THAWED"


def read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as f:
        return f.read().strip()


def remove_tree(directory: str, timeout: float = 5) -> bool:
    """rmdir a cgroup and its descendants, deepest first; thaws frozen ones first.

    Only empty cgroups can be removed, so a cgroup still in use survives; returns
    whether the directory is gone.
    """
    end = time.monotonic() + timeout
    while os.path.isdir(directory):
        for top, dirs, _ in os.walk(directory, topdown=False):
            for d in [*(os.path.join(top, x) for x in dirs)]:
                _thaw(d)
                _rmdir(d)
        _thaw(directory)
        _rmdir(directory)
        if not os.path.isdir(directory) or time.monotonic() > end:
            break
        time.sleep(0.1)
    return not os.path.isdir(directory)


def _thaw(d: str) -> None:
    state = os.path.join(d, "freezer.state")
    try:
        with open(state) as f:
            frozen = f.read().strip() != "THAWED"
        if frozen:
            with open(state, "w") as f:
                f.write("THAWED")
    except OSError:
        pass


def _rmdir(d: str) -> None:
    try:
        os.rmdir(d)
    except OSError:
        pass
