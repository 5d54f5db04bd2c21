"""delete: what it removes, what it must leave alone, and when it must refuse."""

from __future__ import annotations

import os

import pytest

from conformance import cgroupfs, procfs
from conformance.cases import case, deviation, needs

pytestmark = pytest.mark.root

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


@case("DL-01", "runtime.md#delete", "MUST")
def test_delete_stopped(h):
    """delete of a stopped container removes it: state fails, list omits it"""
    c = h.start(h.bundle(["true"]))
    c.wait_stopped()
    c.delete()
    assert h.rt("state", c.cid).rc != 0
    assert c.cid not in h.rt.ids()


@case("DL-02", "runtime.md#delete", "MUST")
def test_delete_keeps_foreign_resources(h):
    """delete leaves what the container did not create: bundle, rootfs, bind sources"""
    src = h.mkdir("volume")
    with open(os.path.join(src, "keep"), "w") as f:
        f.write("data")

    def edit(cfg):
        cfg["mounts"].append({"destination": "/volume", "type": "bind", "source": src,
                              "options": ["rbind", "rw"]})

    b = h.bundle(["true"], edit=edit)
    c = h.start(b)
    c.wait_stopped()
    c.delete()
    assert os.path.exists(os.path.join(b, "config.json"))
    assert os.path.exists(os.path.join(b, "rootfs", "bin", "busybox"))
    with open(os.path.join(src, "keep")) as f:
        assert f.read() == "data"


@case("DL-03", "runtime.md#delete", "MUST")
def test_delete_running_fails(h):
    """delete of a running container fails and leaves it running"""
    c = h.start(h.bundle(["sleep", "100"]))
    assert c.delete(check=False).rc != 0
    assert c.status() == "running" and procfs.alive(c.pid)


@deviation("runc", "runc 1.1.5 deletes a created container without --force (delete.go: "
           "Created -> killContainer); engines such as containerd rely on it")
@deviation("crun", "crun 1.8.1 deletes a created container without --force, as runc does")
@deviation("ocirt", "ocirt keeps runc's behaviour on purpose: containerd's runc shim deletes "
           "created-but-never-started tasks with a plain `delete`")
@case("DL-04", "runtime.md#delete", "MUST")
def test_delete_created_fails(h):
    """delete of a created (not stopped) container fails and leaves it created"""
    c = h.create(h.bundle(["sleep", "100"]))
    assert c.delete(check=False).rc != 0
    assert c.status() == "created" and procfs.alive(c.pid)


@case("DL-05", "runc: delete --force", "RUNC")
def test_force_delete_running(h):
    """delete --force kills a running container and removes it"""
    c = h.start(h.bundle(["sleep", "100"]))
    c.delete(force=True)
    assert procfs.wait_gone(c.pid, 5)
    assert h.rt("state", c.cid).rc != 0


@case("DL-06", "runc: delete --force", "RUNC")
def test_force_delete_created(h):
    """delete --force kills a created container's init and removes it"""
    c = h.create(h.bundle(["sleep", "100"]))
    c.delete(force=True)
    assert procfs.wait_gone(c.pid, 5)
    assert h.rt("state", c.cid).rc != 0


@case("DL-07", "runc: delete", "RUNC")
def test_delete_unknown(h):
    """delete of an unknown container fails; with --force it succeeds quietly"""
    assert h.rt("delete", h.cid()).rc != 0
    assert h.rt("delete", "--force", h.cid()).rc == 0


@needs("cgroups")
@case("DL-08", "runtime.md#delete", "MUST")
def test_delete_removes_cgroups(h):
    """delete removes the cgroups that create made"""
    name = h.cgroup_name()
    b = h.bundle(["sleep", "100"], edit=lambda cfg: cfg["linux"].update(cgroupsPath=name))
    c = h.start(b)
    dirs = [cgroupfs.process_dir(c.pid, ctl) for ctl in V1_CONTROLLERS]
    dirs = [d for d in dirs if d]
    assert dirs and all(d.endswith("/" + name) for d in dirs), dirs
    c.kill("KILL")
    c.wait_stopped()
    c.delete()
    left = [d for d in dirs if os.path.isdir(d)]
    assert not left, f"cgroups left after delete: {left}"


@case("DL-09", "runtime.md#delete", "MUST")
def test_delete_twice_fails(h):
    """a deleted container is gone: a second delete fails"""
    c = h.start(h.bundle(["true"]))
    c.wait_stopped()
    c.delete()
    assert c.delete(check=False).rc != 0
