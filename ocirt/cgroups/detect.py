"""Which cgroup hierarchies this host has, where they are mounted, and where we sit in each.

Read from /proc/self/mountinfo (mount point and *mount root* of every cgroup and cgroup2
mount) and /proc/self/cgroup (our own cgroup in each hierarchy). Both are shown relative
to our cgroup namespace, so the pair maps our cgroup to a directory whether or not we
are in a cgroup namespace, as long as the mount's root is an ancestor of our cgroup
(a mount made outside the namespace shows a root such as `/..`; such a mount cannot
reach our cgroup and is not used).

The layout is one of:
  * `v1`: only v1 hierarchies (one per controller or co-mounted group);
  * `hybrid`: v1 controllers plus a cgroup2 mount (systemd's /sys/fs/cgroup/unified);
  * `unified`: a cgroup2 hierarchy and no v1 controller;
  * `none`: no cgroup filesystem at all.
"""

from __future__ import annotations

import posixpath

from ocirt.linux import mountinfo

# The v1 controllers the managers know (runc's list); `name=systemd` is joined as well.
V1_CONTROLLERS = ("cpuset", "cpu", "cpuacct", "memory", "devices", "freezer", "blkio", "pids",
                  "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc")
SYSTEMD_NAME = "name=systemd"
CGROUP_ROOT = "/sys/fs/cgroup"


class Hierarchy:
    """One mounted hierarchy: `key` is its /proc/self/cgroup key ("cpu,cpuacct",
    "name=systemd", "" for cgroup2)."""

    __slots__ = ("key", "mountpoint", "root", "own")

    def __init__(self, key: str, mountpoint: str, root: str, own: str) -> None:
        self.key = key
        self.mountpoint = mountpoint
        self.root = root
        self.own = own

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(self.key.split(",")) if self.key else ()

    def dir_of(self, cgroup: str) -> str | None:
        """The directory of the absolute cgroup path `cgroup`, or None when this mount
        does not reach it."""
        rel = relative_to(cgroup, self.root)
        if rel is None:
            return None
        return posixpath.join(self.mountpoint, rel) if rel else self.mountpoint

    def own_dir(self) -> str | None:
        return self.dir_of(self.own)

    def __repr__(self) -> str:
        return f"Hierarchy({self.key or 'cgroup2'} at {self.mountpoint}, own={self.own})"


def relative_to(path: str, root: str) -> str | None:
    """`path` below `root` as a relative path ("" for root itself), None if outside. A
    root with `..` in it (a mount made outside our cgroup namespace, shown relative to
    the namespace) is outside by definition."""
    if ".." in root.split("/"):
        return None
    path = posixpath.normpath(path)
    root = posixpath.normpath(root)
    if root == "/":
        return path.lstrip("/")
    if path == root:
        return ""
    if path.startswith(root + "/"):
        return path[len(root) + 1:]
    return None


class Layout:
    """The host's cgroup layout as seen from this process."""

    def __init__(self, v1: list[Hierarchy], unified: Hierarchy | None) -> None:
        self.v1 = v1
        self.unified = unified

    @property
    def mode(self) -> str:
        has_controllers = any(set(h.controllers) & set(V1_CONTROLLERS) for h in self.v1)
        if self.unified is not None:
            return "hybrid" if has_controllers else "unified"
        return "v1" if self.v1 else "none"

    def hierarchy(self, controller: str) -> Hierarchy | None:
        """The v1 hierarchy holding `controller` (or `name=systemd`)."""
        for h in self.v1:
            if controller in h.controllers:
                return h
        return None

    def __repr__(self) -> str:
        return f"Layout({self.mode}: {self.v1}, unified={self.unified})"


def detect(mounts: list[mountinfo.MountEntry] | None = None,
           membership: dict[str, str] | None = None) -> Layout:
    """The layout of this process (arguments are for tests: parsed mountinfo lines and
    /proc/self/cgroup as returned by ocirt.linux.mountinfo)."""
    if mounts is None:
        mounts = mountinfo.mounts(fstypes=("cgroup", "cgroup2"))
    if membership is None:
        membership = mountinfo.cgroup_membership()
    candidates: dict[str, list[Hierarchy]] = {}
    for entry in mounts:
        if entry.fstype == "cgroup2":
            key = ""
        elif entry.fstype == "cgroup":
            key = mountinfo.v1_hierarchy_key(entry)
            if not _wanted(key):
                continue
        else:
            continue
        own = membership.get(key)
        if own is None:
            continue
        candidates.setdefault(key, []).append(Hierarchy(key, entry.mountpoint, entry.root, own))
    chosen = {key: best for key, found in candidates.items()
              if (best := _best_mount(found)) is not None}
    unified = chosen.pop("", None)
    v1 = sorted(chosen.values(), key=lambda h: h.mountpoint)
    return Layout(v1, unified)


def _wanted(key: str) -> bool:
    parts = key.split(",")
    return any(p in V1_CONTROLLERS or p == SYSTEMD_NAME for p in parts)


def _best_mount(found: list[Hierarchy]) -> Hierarchy | None:
    """Of several mounts of one hierarchy: one that reaches our cgroup, preferring those
    under /sys/fs/cgroup, then the widest (shortest mount root)."""
    usable = [h for h in found if h.own_dir() is not None]
    if not usable:
        return None

    def rank(h: Hierarchy) -> tuple[int, int, int]:
        under = h.mountpoint == CGROUP_ROOT or h.mountpoint.startswith(CGROUP_ROOT + "/")
        return (0 if under else 1, len(posixpath.normpath(h.root)), len(h.mountpoint))

    return min(usable, key=rank)
