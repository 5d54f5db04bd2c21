"""The v2 manager's resource files, against a fake cgroupfs tree (no root needed).

The fake is a directory tree whose files stand for the kernel's: a write to a file that
does not exist fails with ENOENT as on cgroupfs, every write is recorded in order (many
cgroup files take one line per write), and cgroup.freeze is mirrored into cgroup.events.
"""

from __future__ import annotations

import errno
import os

import pytest

from ocirt.cgroups import bpf, fs
from ocirt.cgroups.resources import DeviceRule
from ocirt.cgroups.v2 import V2Manager, shares_to_weight, swap_to_v2
from ocirt.errors import OcirtError
from tests.cgroups import bpf_interp
from tests.cgroups.helpers import FakeTree


@pytest.fixture
def tree(tmp_path, monkeypatch):
    fake = FakeTree(str(tmp_path))
    monkeypatch.setattr(fs, "write_raw", fake.write_raw)
    fake.make_cgroup("", files=("cgroup.controllers", "cgroup.subtree_control", "cgroup.procs"))
    return fake


@pytest.fixture
def attached(monkeypatch):
    programs: list[tuple[str, bytes]] = []
    monkeypatch.setattr(bpf, "attach", lambda d, code: programs.append((d, code)))
    monkeypatch.setattr("ocirt.cgroups.factory.in_user_namespace", lambda: False)
    monkeypatch.setattr("ocirt.linux.proc.in_user_namespace", lambda: False)
    return programs


def test_conversions():
    assert shares_to_weight(1024) == 100
    assert shares_to_weight(2) == 1
    assert shares_to_weight(262144) == 10000
    assert shares_to_weight(512) == 59
    assert shares_to_weight(0) == 0
    assert swap_to_v2(200, 100) == 100
    assert swap_to_v2(0, -1) == -1
    assert swap_to_v2(-1, 100) == -1
    with pytest.raises(OcirtError, match="memory.swap: memory\\+swap limit should be"):
        swap_to_v2(50, 100)
    with pytest.raises(OcirtError, match="without memory limit"):
        swap_to_v2(50, 0)


def test_every_resource_lands_in_its_v2_file(tree, attached):
    leaf = tree.make_cgroup("c1")
    mgr = V2Manager(leaf)
    mgr.default_rules = [DeviceRule(True, "c", 1, 3, "rwm")]
    mgr.create()
    assert mgr.made == []  # it existed: joined, never removed by us
    mgr.apply({
        "memory": {"limit": 1 << 26, "swap": 1 << 27, "reservation": 1 << 25},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 1000, "idle": 0,
                "cpus": "0", "mems": "0"},
        "pids": {"limit": 10},
        "blockIO": {"weight": 10, "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1024}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 7}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 22}],
        "rdma": {"mlx4_0": {"hcaHandles": 2}},
        "unified": {"memory.high": "max"},
        "devices": [{"allow": False, "access": "rwm"}],
    })
    assert tree.wrote("c1/pids.max") == ["10"]
    assert tree.wrote("c1/memory.swap.max") == [str(1 << 26)]  # swap-only on v2
    assert tree.wrote("c1/memory.max") == [str(1 << 26)]
    assert tree.wrote("c1/memory.low") == [str(1 << 25)]
    assert tree.wrote("c1/cpu.weight") == ["100"]
    assert tree.wrote("c1/cpu.max") == ["50000 100000"]
    assert tree.wrote("c1/cpu.max.burst") == ["1000"]
    assert tree.wrote("c1/cpu.idle") == ["0"]
    assert tree.wrote("c1/cpuset.cpus") == ["0"]
    assert tree.wrote("c1/io.weight") == ["1", "8:0 10000"]
    assert tree.wrote("c1/io.max") == ["8:0 rbps=1024", "8:16 wiops=7"]
    assert tree.wrote("c1/hugetlb.2MB.max") == [str(1 << 22)]
    assert tree.wrote("c1/hugetlb.2MB.rsvd.max") == [str(1 << 22)]
    assert tree.wrote("c1/rdma.max") == ["mlx4_0 hca_handle=2 hca_object=max"]
    assert tree.wrote("c1/memory.high") == ["max"]
    # the parent existed: only what the request needs was enabled there
    assert sorted(tree.wrote("cgroup.subtree_control")) == [
        "+cpu", "+cpuset", "+hugetlb", "+io", "+memory", "+pids", "+rdma"]
    [(where, code)] = attached
    assert where == leaf
    assert bpf_interp.decide(code, "c", 1, 3, "rw")
    assert not bpf_interp.decide(code, "c", 1, 5, "r")
    assert mgr.state()["resources"]["pids"] == {"limit": 10}


def test_made_directories_get_controllers_and_are_removed(tree, attached):
    mgr = V2Manager(os.path.join(tree.root, "pod", "c1"))
    mgr.create()
    assert mgr.made == [os.path.join(tree.root, "pod"), os.path.join(tree.root, "pod", "c1")]
    mgr.destroy()
    assert not os.path.exists(os.path.join(tree.root, "pod"))
    assert mgr.made == []


@pytest.fixture
def kernel_dirs(tree, monkeypatch):
    """mkdir fills a new cgroup with its files and rmdir takes a cgroup that has no
    cgroups below it, files and all, as cgroupfs does."""
    make_dirs, rmdir = fs.make_dirs, os.rmdir

    def make_cgroups(path: str) -> list[str]:
        made = make_dirs(path)
        for directory in made:
            tree.make_cgroup(os.path.relpath(directory, tree.root))
        return made

    def remove_cgroup(path: str, **kw) -> None:
        if kw or not path.startswith(tree.root):
            return rmdir(path, **kw)
        if any(entry.is_dir() for entry in os.scandir(path)):
            raise OSError(errno.ENOTEMPTY, "Directory not empty", path)
        for entry in os.scandir(path):
            os.unlink(entry.path)
        rmdir(path)

    monkeypatch.setattr(fs, "make_dirs", make_cgroups)
    monkeypatch.setattr(os, "rmdir", remove_cgroup)
    return tree


def test_controllers_are_passed_down_every_ancestor_and_taken_back(kernel_dirs, attached):
    """An existing ancestor that does not pass memory/pids down gets them enabled, top
    first; delete disables what we enabled where no other cgroup is left below."""
    tree = kernel_dirs
    tree.make_cgroup("slice")
    mgr = V2Manager(os.path.join(tree.root, "slice", "pod", "c1"))
    mgr.create()
    mgr.apply({"memory": {"limit": 1 << 26}, "pids": {"limit": 10}})
    top, middle = tree.root, os.path.join(tree.root, "slice")
    assert mgr.state()["enabled"] == [[top, "memory"], [top, "pids"],
                                      [middle, "memory"], [middle, "pids"]]
    # pod is ours: it passes down all it has (and goes away with the container)
    assert {"+memory", "+pids"} <= set(tree.wrote("slice/pod/cgroup.subtree_control"))
    again = V2Manager.from_state(mgr.state())  # as delete sees it, from state.json
    again.destroy()
    assert tree.wrote("slice/cgroup.subtree_control")[-2:] == ["-pids", "-memory"]
    assert tree.wrote("cgroup.subtree_control") == ["+memory", "+pids"]  # slice is still there
    assert fs.read(middle, "cgroup.subtree_control") == ""
    assert again.state() is None or again.state()["enabled"] == []


def test_controllers_stay_where_another_cgroup_appeared(kernel_dirs, attached):
    tree = kernel_dirs
    tree.make_cgroup("slice")
    mgr = V2Manager(os.path.join(tree.root, "slice", "c1"))
    mgr.create()
    mgr.apply({"pids": {"limit": 10}})
    tree.make_cgroup("slice/other")  # e.g. a second container, which may rely on pids
    mgr.destroy()
    assert fs.read(os.path.join(tree.root, "slice"), "cgroup.subtree_control") == "pids"


def test_an_ancestor_with_processes_is_named(kernel_dirs, attached):
    tree = kernel_dirs
    tree.make_cgroup("busy.scope")
    tree.fail_once["busy.scope/cgroup.subtree_control"] = errno.EBUSY
    mgr = V2Manager(os.path.join(tree.root, "busy.scope", "c1"))
    mgr.create()
    with pytest.raises(OcirtError, match=r"linux.resources.memory: cannot pass the memory "
                       r"controller down from .*busy.scope: that cgroup holds processes"):
        mgr.apply({"memory": {"limit": 1 << 26}})
    mgr.destroy()


def test_unlimited_values(tree, attached):
    leaf = tree.make_cgroup("c1")
    V2Manager(leaf).apply({"memory": {"limit": -1}, "cpu": {"quota": -1}, "pids": {"limit": -1}})
    assert tree.wrote("c1/memory.swap.max") == ["max"]
    assert tree.wrote("c1/memory.max") == ["max"]
    assert tree.wrote("c1/cpu.max") == ["max 100000"]
    assert tree.wrote("c1/pids.max") == ["max"]


def test_pids_limit_zero_is_a_limit():
    """runtime-spec 1.3: 0 is a valid limit, not "unlimited" (runc 1.5 writes 1)."""
    from ocirt.cgroups.resources import pids_max

    assert [pids_max(n) for n in (0, -1, -5, 1, 42)] == ["1", "max", "max", "1", "42"]


def test_update_keeps_the_other_half_of_cpu_max(tree, attached):
    leaf = tree.make_cgroup("c1")
    mgr = V2Manager(leaf)
    mgr.apply({"cpu": {"quota": 20000, "period": 50000}})
    mgr.update({"cpu": {"quota": 30000}})
    assert tree.wrote("c1/cpu.max") == ["20000 50000", "30000 50000"]
    assert mgr.state()["resources"]["cpu"] == {"quota": 30000, "period": 50000}
    assert len(attached) == 1  # update never touches the device filter (runc)


@pytest.mark.parametrize("resources,message", [
    ({"cpu": {"realtimeRuntime": 1000}},
     "linux.resources.cpu.realtimeRuntime: realtime scheduling limits are not supported"),
    ({"unified": {"foo.bar": "1"}}, "linux.resources.unified.foo.bar: controller 'foo' not "
                                    "available"),
    ({"memory": {"limit": 100, "swap": 50}},
     r"linux.resources.memory.swap: memory\+swap limit should be >= memory limit"),
    ({"hugepageLimits": [{"pageSize": "1GB", "limit": 1}]},
     r"linux.resources.hugepageLimits\[1GB\]: .*hugetlb.1GB.max does not exist"),
])
def test_refusals_name_the_resource(tree, attached, resources, message):
    leaf = tree.make_cgroup("c1")
    with pytest.raises(OcirtError, match=message):
        V2Manager(leaf).apply(resources)


def test_settings_v2_lacks_are_reported(tree, attached, capfd):
    leaf = tree.make_cgroup("c1")
    V2Manager(leaf).apply({"memory": {"limit": 4096, "swappiness": 10,
                                      "disableOOMKiller": True},
                           "network": {"classID": 3}})
    err = capfd.readouterr().err
    assert "linux.resources.memory.swappiness: not supported on cgroup v2" in err
    assert "linux.resources.memory.disableOOMKiller: not supported on cgroup v2" in err
    assert "linux.resources.network: net_cls/net_prio do not exist on cgroup v2" in err


def test_check_before_update(tree, attached):
    leaf = tree.make_cgroup("c1")
    with open(os.path.join(leaf, "memory.current"), "w") as f:
        f.write("1000000\n")
    with pytest.raises(OcirtError, match="rejecting memory limit 4096 <= usage 1000000"):
        V2Manager(leaf).update({"memory": {"limit": 4096, "checkBeforeUpdate": True}})
    V2Manager(leaf).update({"memory": {"limit": 2000000, "checkBeforeUpdate": True}})


def test_freeze_thaw_and_state(tree, attached):
    leaf = tree.make_cgroup("c1")
    mgr = V2Manager(leaf)
    mgr.freeze()
    assert mgr.is_frozen()
    mgr.thaw()
    assert not mgr.is_frozen()
    assert mgr.kill_all()
    assert tree.wrote("c1/cgroup.kill") == ["1"]
    again = V2Manager.from_state(mgr.state())
    assert again.paths() == {"": leaf}


def test_a_busy_cgroup_is_refused(tree):
    leaf = tree.make_cgroup("c1")
    with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
        f.write("4242\n")
    with pytest.raises(OcirtError, match="container's cgroup is not empty: 1 process"):
        V2Manager(leaf).create()


def test_rootless_without_a_cgroup(tree, attached):
    mgr = V2Manager(os.path.join(tree.root, "c1"), rootless=True)
    mgr._drop(mgr.path)
    mgr.apply({"devices": [{"allow": False}]})  # device rules alone: skipped, as runc
    with pytest.raises(OcirtError, match="container could not join or create cgroup"):
        mgr.apply({"pids": {"limit": 3}})


def test_update_ignores_device_rules(tree, attached, capfd):
    leaf = tree.make_cgroup("c1")
    mgr = V2Manager(leaf)
    mgr.apply({"devices": [{"allow": False}]})
    mgr.update({"devices": [{"allow": True}], "pids": {"limit": 3}})
    assert "update does not change device rules" in capfd.readouterr().err
    assert mgr.state()["resources"]["devices"] == [{"allow": False}]
    assert tree.wrote("c1/pids.max") == ["3"]
    assert len(attached) == 1


def test_stats_from_v2_files(tree):
    leaf = tree.make_cgroup("c1")
    files = {"memory.current": "4096\n", "memory.max": "max\n", "memory.peak": "8192\n",
             "memory.swap.current": "0\n", "memory.swap.max": "max\n",
             "memory.stat": "anon 1000\nfile 3000\n", "pids.current": "2\n",
             "pids.max": "max\n",
             "cpu.stat": "usage_usec 50\nuser_usec 30\nsystem_usec 20\nnr_periods 4\n"
                         "nr_throttled 1\nthrottled_usec 7\n",
             "io.stat": "8:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n"}
    for name, text in files.items():
        with open(os.path.join(leaf, name), "w") as f:
            f.write(text)
    data = V2Manager(leaf).stats()
    assert data["cpu"]["usage"] == {"total": 50000, "kernel": 20000, "user": 30000}
    assert data["cpu"]["throttling"] == {"periods": 4, "throttledPeriods": 1,
                                         "throttledTime": 7000}
    assert data["memory"]["usage"] == {"limit": (1 << 64) - 1, "usage": 4096, "max": 8192,
                                       "failcnt": 0}
    assert data["memory"]["cache"] == 3000 and data["memory"]["raw"]["anon"] == 1000
    assert data["pids"] == {"current": 2}
    assert data["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "op": "Read", "value": 512}, {"major": 8, "op": "Write", "value": 1024}]
    assert list(data) == ["cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt",
                          "network_interfaces"]


def test_oom_watch_on_v2_memory_events(tree):
    from ocirt.cgroups.oom import OOMWatch

    leaf = tree.make_cgroup("c1", files=("cgroup.procs", "memory.events"))
    events = os.path.join(leaf, "memory.events")
    with open(events, "w") as f:
        f.write("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    with OOMWatch(V2Manager(leaf)) as watch:
        assert watch.fd >= 0  # inotify on memory.events
        assert list(watch.wait(0.01)) == []  # the kill before we looked does not count
        with open(events, "w") as f:
            f.write("low 0\nhigh 0\nmax 9\noom 3\noom_kill 3\n")
        assert len(list(watch.wait(1.0))) == 2
        assert list(watch.wait(0.01)) == []
