"""Host layout detection from mountinfo and /proc/self/cgroup (no root needed)."""

from __future__ import annotations

import pytest

from ocirt.cgroups.detect import Layout, detect, relative_to
from ocirt.cgroups.factory import cgroup_dir, cgroupfs_manager, clean_path
from ocirt.errors import OcirtError
from ocirt.linux.mountinfo import MountEntry

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
HYBRID_CG = {"cpu,cpuacct": "/", "memory": "/sup/abc", "devices": "/",
             "name=systemd": "/user.slice", "": "/user.slice"}


def entries(text: str) -> list[MountEntry]:
    return [MountEntry(line) for line in text.splitlines() if line.strip()]


def test_hybrid_host():
    layout = detect(entries(HYBRID), HYBRID_CG)
    assert layout.mode == "hybrid"
    assert layout.hierarchy("cpuacct") is layout.hierarchy("cpu")
    assert layout.hierarchy("memory").own_dir() == "/sys/fs/cgroup/memory/sup/abc"
    assert layout.hierarchy("name=systemd").own_dir() == "/sys/fs/cgroup/systemd/user.slice"
    assert layout.unified.own_dir() == "/sys/fs/cgroup/unified/user.slice"
    assert layout.hierarchy("freezer") is None


def test_unified_and_v1_only_hosts():
    unified = entries("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
    assert detect(unified, {"": "/init.scope"}).mode == "unified"
    v1 = entries(HYBRID.replace("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 "
                                "cgroup2 rw,nsdelegate\n", ""))
    assert detect(v1, HYBRID_CG).mode == "v1"
    assert detect([], {}).mode == "none"
    # a named hierarchy alone does not make a v1 host
    only_named = entries("40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
                         "30 23 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    assert detect(only_named, {"name=systemd": "/", "": "/"}).mode == "unified"


def test_cgroup_namespace_mount_roots():
    """Inside a cgroup namespace with the hierarchy remounted, the mount root is "/" and
    our cgroup is "/"; a mount inherited from outside shows a root like "/.." and cannot
    reach our cgroup, so it is not used."""
    remounted = entries("50 40 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    layout = detect(remounted, {"memory": "/"})
    assert layout.hierarchy("memory").own_dir() == "/sys/fs/cgroup/memory"
    inherited = entries("50 40 0:32 /.. /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    assert detect(inherited, {"memory": "/"}).hierarchy("memory") is None


def test_bind_mounted_subtree_and_duplicates():
    """A container-style bind of a subtree maps paths through its root; of two mounts
    of one hierarchy the one under /sys/fs/cgroup reaching our cgroup wins."""
    text = ("60 40 0:32 /sup /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
            "61 40 0:32 / /mnt/memory rw - cgroup cgroup rw,memory\n")
    layout = detect(entries(text), {"memory": "/sup/abc"})
    h = layout.hierarchy("memory")
    assert h.mountpoint == "/sys/fs/cgroup/memory"
    assert h.own_dir() == "/sys/fs/cgroup/memory/abc"
    assert h.dir_of("/other") is None


def test_relative_to():
    assert relative_to("/a/b", "/") == "a/b"
    assert relative_to("/a/b", "/a") == "b"
    assert relative_to("/a", "/a") == ""
    assert relative_to("/ab", "/a") is None
    assert relative_to("/a/../b", "/a") is None


def test_clean_path_cannot_climb_out():
    assert clean_path("c1") == ("c1", False)
    assert clean_path("../../etc/x") == ("etc/x", False)
    assert clean_path("/a/../../b") == ("/b", True)
    assert clean_path("a//b/./c/") == ("a/b/c", False)


def test_paths_relative_nest_below_own_cgroup_absolute_from_root():
    layout = detect(entries(HYBRID), HYBRID_CG)
    mem = layout.hierarchy("memory")
    assert cgroup_dir(mem, "x/y", False) == "/sys/fs/cgroup/memory/sup/abc/x/y"
    assert cgroup_dir(mem, "/x/y", True) == "/sys/fs/cgroup/memory/x/y"
    mgr = cgroupfs_manager(layout, "", "c7", rootless=False)
    paths = mgr.paths()
    assert paths["memory"] == "/sys/fs/cgroup/memory/sup/abc/c7"
    assert paths["cpu"] == paths["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/c7"
    assert paths["name=systemd"] == "/sys/fs/cgroup/systemd/user.slice/c7"
    assert paths[""] == "/sys/fs/cgroup/unified/user.slice/c7"  # hybrid: joined like runc


def test_on_a_v2_host_a_relative_path_goes_beside_our_cgroup():
    """runc's fs2: the caller's cgroup (a systemd service, say) holds processes, so v2
    would let it enable no controller for a child; the container goes below its parent."""
    unified = entries("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
    service = detect(unified, {"": "/system.slice/ocirt.service"})
    mgr = cgroupfs_manager(service, "", "c7", rootless=False)
    assert mgr.paths() == {"": "/sys/fs/cgroup/system.slice/c7"}
    assert cgroupfs_manager(service, "/abs/c7", "c7", rootless=False).paths() == {
        "": "/sys/fs/cgroup/abs/c7"}
    at_root = detect(unified, {"": "/"})  # e.g. in a cgroup namespace of our own
    assert cgroupfs_manager(at_root, "k/c7", "c7", rootless=False).paths() == {
        "": "/sys/fs/cgroup/k/c7"}


def test_absolute_path_outside_a_bind_mount_is_an_error():
    layout = detect(entries("60 40 0:32 /sup /sys/fs/cgroup/memory rw - cgroup cgroup "
                            "rw,memory\n"), {"memory": "/sup"})
    with pytest.raises(OcirtError, match="not reachable"):
        cgroupfs_manager(layout, "/elsewhere/c1", "c1", rootless=False)


def test_no_cgroupfs():
    with pytest.raises(OcirtError, match="no cgroup filesystem"):
        cgroupfs_manager(Layout([], None), "", "c1", rootless=False)
    assert cgroupfs_manager(Layout([], None), "", "c1", rootless=True).state() is None


def test_this_host_is_detected():
    layout = detect()
    assert layout.mode in ("v1", "hybrid", "unified")
    for h in layout.v1 + ([layout.unified] if layout.unified else []):
        assert h.own_dir() is not None
