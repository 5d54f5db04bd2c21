"""The v1 manager's write orders and fallbacks, against a fake cgroupfs tree (no root
needed): what only a particular kernel state or another host layout would show."""

from __future__ import annotations

import errno
import os

import pytest

from ocirt.cgroups import fs
from ocirt.cgroups.v1 import V1Manager
from ocirt.errors import OcirtError
from tests.cgroups.helpers import FakeTree

MEMORY = ("cgroup.procs", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
          "memory.soft_limit_in_bytes", "memory.kmem.limit_in_bytes",
          "memory.kmem.tcp.limit_in_bytes", "memory.usage_in_bytes",
          "memory.max_usage_in_bytes", "memory.oom_control", "memory.swappiness")
CPU = ("cgroup.procs", "cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us",
       "cpu.rt_period_us", "cpu.rt_runtime_us", "cpu.cfs_burst_us", "cpu.idle")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    fake = FakeTree(str(tmp_path))
    monkeypatch.setattr(fs, "write_raw", fake.write_raw)
    monkeypatch.setattr("ocirt.cgroups.factory.in_user_namespace", lambda: False)
    monkeypatch.setattr("ocirt.linux.proc.in_user_namespace", lambda: False)
    return fake


def put(directory: str, name: str, value: str) -> None:
    with open(os.path.join(directory, name), "w") as f:
        f.write(value)


def test_raising_memory_writes_swap_first(tree):
    mem = tree.make_cgroup("memory/c1", files=MEMORY)
    put(mem, "memory.limit_in_bytes", "1000\n")
    V1Manager({"memory": mem}).apply({"memory": {"limit": 2000, "swap": 4000}})
    assert [p for p, _ in tree.writes] == ["memory/c1/memory.memsw.limit_in_bytes",
                                           "memory/c1/memory.limit_in_bytes"]


def test_lowering_memory_writes_the_limit_first(tree):
    mem = tree.make_cgroup("memory/c1", files=MEMORY)
    put(mem, "memory.limit_in_bytes", "9000\n")
    V1Manager({"memory": mem}).apply({"memory": {"limit": 2000, "swap": 4000}})
    assert [p for p, _ in tree.writes] == ["memory/c1/memory.limit_in_bytes",
                                           "memory/c1/memory.memsw.limit_in_bytes"]


def test_unlimited_memory_makes_swap_unlimited(tree):
    mem = tree.make_cgroup("memory/c1", files=MEMORY)
    put(mem, "memory.limit_in_bytes", "9000\n")
    V1Manager({"memory": mem}).apply({"memory": {"limit": -1}})
    assert tree.wrote("memory/c1/memory.memsw.limit_in_bytes") == ["-1"]
    assert tree.wrote("memory/c1/memory.limit_in_bytes") == ["-1"]


def test_limit_below_usage_names_the_usage(tree):
    mem = tree.make_cgroup("memory/c1", files=MEMORY)
    put(mem, "memory.usage_in_bytes", "5000\n")
    put(mem, "memory.max_usage_in_bytes", "7000\n")
    tree.fail_once["memory/c1/memory.limit_in_bytes"] = errno.EBUSY
    with pytest.raises(OcirtError, match=r"linux.resources.memory.limit: unable to set memory "
                                         r"limit to 4096 \(current usage: 5000, peak usage: "
                                         r"7000\)"):
        V1Manager({"memory": mem}).apply({"memory": {"limit": 4096}})


def test_kernel_memory_is_best_effort(tree, capfd):
    mem = tree.make_cgroup("memory/c1", files=MEMORY)
    V1Manager({"memory": mem}).apply({"memory": {"kernel": 4096, "kernelTCP": 8192}})
    assert tree.wrote("memory/c1/memory.kmem.tcp.limit_in_bytes") == ["8192"]
    os.unlink(os.path.join(mem, "memory.kmem.limit_in_bytes"))
    V1Manager({"memory": mem}).apply({"memory": {"kernel": 4096}})
    assert "linux.resources.memory.kernel: not applied" in capfd.readouterr().err


def test_cfs_period_refused_first_is_retried_after_the_quota(tree):
    cpu = tree.make_cgroup("cpu/c1", files=CPU)
    tree.fail_once["cpu/c1/cpu.cfs_period_us"] = errno.EINVAL
    V1Manager({"cpu": cpu}).apply({"cpu": {"period": 10000, "quota": 5000}})
    assert tree.writes == [("cpu/c1/cpu.cfs_period_us", "REFUSED 10000"),
                           ("cpu/c1/cpu.cfs_quota_us", "5000"),
                           ("cpu/c1/cpu.cfs_period_us", "10000")]


def test_rt_settings_before_shares_and_in_a_working_order(tree):
    cpu = tree.make_cgroup("cpu/c1", files=CPU)
    put(cpu, "cpu.shares", "512")
    tree.fail_once["cpu/c1/cpu.rt_period_us"] = errno.EINVAL
    V1Manager({"cpu": cpu}).apply({"cpu": {"realtimePeriod": 1000, "realtimeRuntime": 500,
                                           "shares": 512, "burst": 10, "idle": 1}})
    assert [p.rsplit("/", 1)[1] for p, _ in tree.writes] == [
        "cpu.rt_period_us", "cpu.rt_runtime_us", "cpu.rt_period_us", "cpu.shares",
        "cpu.cfs_burst_us", "cpu.idle"]


def test_blkio_weight_files_and_bfq_fallback(tree):
    blkio = tree.make_cgroup("blkio/c1", files=("cgroup.procs", "blkio.bfq.weight",
                                                "blkio.bfq.weight_device",
                                                "blkio.throttle.read_bps_device"))
    V1Manager({"blkio": blkio}).apply({"blockIO": {
        "weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 500}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 100},
                                  {"major": 8, "minor": 16, "rate": 200}]}})
    assert tree.wrote("blkio/c1/blkio.bfq.weight") == ["300"]
    assert tree.wrote("blkio/c1/blkio.bfq.weight_device") == ["8:0 500"]
    assert tree.wrote("blkio/c1/blkio.throttle.read_bps_device") == ["8:0 100", "8:16 200"]
    with pytest.raises(OcirtError, match="linux.resources.blockIO.leafWeight: .*"
                                         "blkio.leaf_weight does not exist"):
        V1Manager({"blkio": blkio}).apply({"blockIO": {"leafWeight": 300}})


def test_hugetlb_on_a_hybrid_host_goes_to_cgroup2(tree):
    """Where hugetlb is bound to the cgroup2 hierarchy and enabled for us, the limit is
    set there; where it is not, the error names the resource."""
    unified = tree.make_cgroup("unified/c1", files=("cgroup.procs", "hugetlb.2MB.max"))
    V1Manager({"": unified}).apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    assert tree.wrote("unified/c1/hugetlb.2MB.max") == [str(4 << 20)]
    with pytest.raises(OcirtError, match="linux.resources.hugepageLimits: cannot set hugetlb "
                                         "limit: the hugetlb controller is not available"):
        V1Manager({"": unified}).apply({"hugepageLimits": [{"pageSize": "1GB", "limit": 1}]})


def test_network_and_rdma_files(tree):
    net_cls = tree.make_cgroup("net_cls/c1", files=("cgroup.procs", "net_cls.classid"))
    net_prio = tree.make_cgroup("net_prio/c1", files=("cgroup.procs", "net_prio.ifpriomap"))
    rdma = tree.make_cgroup("rdma/c1", files=("cgroup.procs", "rdma.max"))
    V1Manager({"net_cls": net_cls, "net_prio": net_prio, "rdma": rdma}).apply({
        "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5},
                                                       {"name": "lo", "priority": 2}]},
        "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}}})
    assert tree.wrote("net_cls/c1/net_cls.classid") == ["1048577"]
    assert tree.wrote("net_prio/c1/net_prio.ifpriomap") == ["eth0 5", "lo 2"]
    assert tree.wrote("rdma/c1/rdma.max") == ["mlx5_1 hca_handle=3 hca_object=10000"]


def test_freezer_rewrites_while_freezing(tree, monkeypatch):
    freezer = tree.make_cgroup("freezer/c1", files=("cgroup.procs", "freezer.state",
                                                    "freezer.self_freezing"))
    reads = iter(["FREEZING", "FREEZING", "FROZEN"])
    real_read = fs.read

    def read(directory: str, name: str) -> str:
        return next(reads) if name == "freezer.state" else real_read(directory, name)

    with monkeypatch.context() as mp:
        mp.setattr(fs, "read", read)
        V1Manager({"freezer": freezer}).freeze()
    assert tree.wrote("freezer/c1/freezer.state") == ["FROZEN"] * 3
    put(freezer, "freezer.state", "FROZEN\n")
    put(freezer, "freezer.self_freezing", "0\n")  # frozen by an ancestor: not paused by us
    assert not V1Manager({"freezer": freezer}).is_frozen()
    put(freezer, "freezer.self_freezing", "1\n")
    assert V1Manager({"freezer": freezer}).is_frozen()


def test_rootless_skips_what_it_may_not_create(tree, monkeypatch, capfd):
    def refuse(path: str) -> list[str]:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(fs, "make_dirs", refuse)
    paths = {"memory": os.path.join(tree.root, "memory/c1"),
             "pids": os.path.join(tree.root, "pids/c1")}
    mgr = V1Manager(paths, rootless=True)
    mgr.create()
    assert capfd.readouterr().err == ""  # runc prints nothing either
    assert mgr.state() is None  # nothing to remember: no cgroup at all
    mgr.apply({"devices": [{"allow": False}]})  # device rules alone are skipped (runc)
    with pytest.raises(OcirtError, match="linux.resources.pids: cannot set pids limit: "
                                         "container could not join or create cgroup"):
        mgr.apply({"pids": {"limit": 10}})
    with pytest.raises(OcirtError, match="create cgroup .*: permission denied"):
        V1Manager(paths, rootless=True, explicit=True).create()  # cgroupsPath was given
    with pytest.raises(OcirtError, match="create cgroup .*: permission denied"):
        V1Manager(paths).create()


def test_planned_state_counts_what_create_will_make_and_never_what_existed(tmp_path):
    """The state saved before create() makes anything (a SIGKILL may come at any
    instant): the directories it is about to make count as made, so destroy() of that
    state removes them, and never the parent that was there before."""
    parent = tmp_path / "pids" / "existing"
    parent.mkdir(parents=True)
    leaf = str(parent / "mid" / "leaf")
    mgr = V1Manager({"pids": leaf})
    planned = mgr.planned_state()
    assert planned["made"] == [str(parent / "mid"), leaf]
    assert mgr.made == []  # nothing is made yet, nor counted as made
    os.makedirs(leaf)  # create() got this far, then was killed
    V1Manager.from_state(planned).destroy()
    assert not os.path.exists(parent / "mid") and parent.is_dir()
    V1Manager.from_state(planned).destroy()  # killed before anything: nothing to do
