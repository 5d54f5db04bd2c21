"""cgroups: where the container is placed and each resource read back from the kernel.

Only relative cgroupsPath values, or absolute ones while the runtime runs inside the
suite's private cgroup namespace (conformance.sandbox), so nothing lands outside the
suite's own cgroup. Every cgroup name carries the session token; leftovers are removed.
"""

from __future__ import annotations

import os

import pytest

from conformance import cgroupfs, procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = [pytest.mark.root, needs("cgroups")]

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
MIB = 1024 * 1024


def _present(controllers=V1_CONTROLLERS):
    return [c for c in controllers if cgroupfs.v1_hierarchy_for(c) is not None]


def _container(h, resources=None, path=None, args=("sleep", "1000"), devices=None):
    path = path or h.cgroup_name()

    def edit(cfg):
        cfg["linux"]["cgroupsPath"] = path
        if resources is not None:
            cfg["linux"]["resources"] = resources
        if devices is not None:
            cfg["linux"]["devices"] = devices
    c = h.start(h.bundle(list(args), edit=edit))
    if args[0] == "sleep":
        assert wait_for(lambda: procfs.cmdline(c.pid) == list(args), 5)
    return c, path


@case("CG-01", "config-linux.md#cgroups-path (relative: runc)", "RUNC")
def test_relative_path(h):
    """a relative cgroupsPath is placed below the runtime's own cgroup, in every hierarchy"""
    c, path = _container(h)
    for ctl in _present():
        own = cgroupfs.own_dir(ctl)
        assert cgroupfs.process_dir(c.pid, ctl) == os.path.join(own, path), ctl


@case("CG-02", "config-linux.md#cgroups-path", "MUST")
def test_absolute_path(h):
    """an absolute cgroupsPath is taken from the root of the (namespaced) hierarchy"""
    if h.info.sandbox is None:
        pytest.skip("absolute cgroup paths only inside the suite's cgroup namespace")
    top = h.cgroup_name("abs")
    c, path = _container(h, path=f"/{top}/inner")
    sandbox_paths = cgroupfs.proc_cgroups(h.info.sandbox.pid)
    for ctl in _present():
        hier = cgroupfs.v1_hierarchy_for(ctl)
        root = cgroupfs.host_dir(hier, sandbox_paths[hier.key])
        assert cgroupfs.process_dir(c.pid, ctl) == os.path.join(root, top, "inner"), ctl


@case("CG-03", "config-linux.md#cgroups-path", "RUNC")
def test_default_placement(h):
    """without cgroupsPath the container still gets a cgroup of its own"""
    c = h.start(h.bundle(["sleep", "1000"]))
    for ctl in _present(("memory", "pids", "cpu")):
        here = cgroupfs.process_dir(c.pid, ctl)
        assert here != cgroupfs.own_dir(ctl), f"{ctl}: the container shares our cgroup"


def _block_device():
    for name in sorted(os.listdir("/sys/block")):
        if name.startswith(("loop", "ram", "zram", "sr")):
            continue
        with open(f"/sys/block/{name}/dev") as f:
            major, minor = f.read().strip().split(":")
        return int(major), int(minor)
    return None


def _resources():
    dev = _block_device()
    cases = [
        ("memory-limit", {"memory": {"limit": 64 * MIB}}, "memory",
         "memory.limit_in_bytes", str(64 * MIB)),
        ("memory-reservation", {"memory": {"limit": 64 * MIB, "reservation": 32 * MIB}},
         "memory", "memory.soft_limit_in_bytes", str(32 * MIB)),
        ("memory-swap", {"memory": {"limit": 64 * MIB, "swap": 128 * MIB}}, "memory",
         "memory.memsw.limit_in_bytes", str(128 * MIB)),
        ("memory-swappiness", {"memory": {"swappiness": 10}}, "memory",
         "memory.swappiness", "10"),
        ("memory-oom-killer", {"memory": {"disableOOMKiller": True}}, "memory",
         "memory.oom_control", "oom_kill_disable 1"),
        ("cpu-shares", {"cpu": {"shares": 512}}, "cpu", "cpu.shares", "512"),
        ("cpu-quota", {"cpu": {"quota": 50000, "period": 100000}}, "cpu",
         "cpu.cfs_quota_us", "50000"),
        ("cpu-period", {"cpu": {"quota": 50000, "period": 200000}}, "cpu",
         "cpu.cfs_period_us", "200000"),
        ("cpu-burst", {"cpu": {"quota": 50000, "period": 100000, "burst": 10000}}, "cpu",
         "cpu.cfs_burst_us", "10000", [
             deviation("runc", "runc 1.1.5 does not write cpu.burst on cgroup v1"),
             deviation("crun", "crun 1.8.1 does not write cpu.burst on cgroup v1")]),
        ("cpuset-cpus", {"cpu": {"cpus": "0"}}, "cpuset", "cpuset.cpus", "0"),
        ("cpuset-mems", {"cpu": {"mems": "0"}}, "cpuset", "cpuset.mems", "0"),
        ("pids-limit", {"pids": {"limit": 32}}, "pids", "pids.max", "32"),
        ("cpu-rt-period", {"cpu": {"realtimePeriod": 500000}}, "cpu", "cpu.rt_period_us",
         "500000"),
        ("cpu-idle", {"cpu": {"idle": 1}}, "cpu", "cpu.idle", "1", [
            deviation("runc", "runc 1.1.5 does not write cpu.idle on cgroup v1")]),
        ("blkio-weight", {"blockIO": {"weight": 500}}, "blkio", "blkio.weight", "500"),
        ("hugetlb-limit", {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MIB}]},
         "hugetlb", "hugetlb.2MB.limit_in_bytes", str(4 * MIB)),
        ("net-cls-classid", {"network": {"classID": 1048577}}, "net_cls", "net_cls.classid",
         "1048577"),
    ]
    if dev:
        major, minor = dev
        rate = {"major": major, "minor": minor, "rate": MIB}
        cases += [
            ("blkio-read-bps", {"blockIO": {"throttleReadBpsDevice": [rate]}}, "blkio",
             "blkio.throttle.read_bps_device", f"{major}:{minor} {MIB}"),
            ("blkio-write-iops", {"blockIO": {"throttleWriteIOPSDevice": [
                dict(rate, rate=100)]}}, "blkio", "blkio.throttle.write_iops_device",
             f"{major}:{minor} 100"),
        ]
    return [pytest.param(*c[1:5], id=c[0], marks=c[5] if len(c) > 5 else ())
            for c in cases]


@pytest.mark.parametrize("resources,controller,filename,expected", _resources())
@case("CG-04", "config-linux.md#control-groups", "MUST")
def test_resource(h, resources, controller, filename, expected):
    """each resource value is written to its cgroup file (read back from the kernel)"""
    own = cgroupfs.own_dir(controller)
    if own is None:
        pytest.skip(f"no {controller} v1 hierarchy on this host")
    if not os.path.exists(os.path.join(own, filename)) and not filename.startswith("pids."):
        pytest.skip(f"{filename} is not supported by this kernel")  # (the root has no pids.max)
    c, _ = _container(h, resources=resources)
    d = cgroupfs.process_dir(c.pid, controller)
    if not os.path.exists(os.path.join(d, filename)):
        pytest.skip(f"{filename} is not available on this kernel")
    got = cgroupfs.read(d, filename)
    assert expected in got.splitlines() or got == expected, f"{filename}: {got!r}"


DEVICE = {"path": "/dev/conformance-loop", "type": "b", "major": 7, "minor": 0,
          "fileMode": 0o600}


@pytest.mark.parametrize("allow", [False, True])
@case("CG-05", "config-linux.md#allowed-device-list", "MUST")
def test_device_rules(h, allow):
    """device rules are applied in order: deny all, then an allow for one device"""
    rules = [{"allow": False, "access": "rwm"}]
    if allow:
        rules.append({"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"})
    script = ["sh", "-c", "(exec < /dev/conformance-loop) 2>/dev/null && echo opened; echo end"]
    path = h.cgroup_name()

    def edit(cfg):
        cfg["linux"].update(cgroupsPath=path, devices=[DEVICE],
                            resources={"devices": rules})
    out = h.output(h.bundle(script, edit=edit))
    assert ("opened" in out) == allow, out
    c, _ = _container(h, resources={"devices": rules}, devices=[DEVICE])
    listed = cgroupfs.read(cgroupfs.process_dir(c.pid, "devices"), "devices.list").split("\n")
    assert "a *:* rwm" not in listed, listed
    assert ("b 7:0 r" in listed) == allow, listed


@case("CG-06", "config-linux.md#pids", "MUST")
def test_pids_limit_enforced(h):
    """pids.limit stops the container from having more processes"""
    script = "for i in 1 2 3 4 5 6 7 8; do sleep 1000 & done; echo all-forked; exec sleep 1"
    path = h.cgroup_name()

    def edit(cfg):
        cfg["linux"].update(cgroupsPath=path, resources={"pids": {"limit": 4}})
    c = h.start(h.bundle(["sh", "-c", script], edit=edit))
    c.wait_stopped()
    assert "all-forked" not in c.output(), "eight processes forked under a limit of four"
    assert "fork" in c.errors(), c.errors()


@deviation("crun", "crun 1.8.1 leaves the container's cgroups behind when the cpuset "
           "write fails")
@case("CG-07", "runtime.md#errors", "MUST")
def test_unapplicable_resource_fails(h):
    """a resource the kernel refuses (cpuset of a missing CPU) fails create, leaving nothing"""
    path = h.cgroup_name()

    def edit(cfg):
        cfg["linux"].update(cgroupsPath=path, resources={"cpu": {"cpus": "4095"}})
    c = h.create(h.bundle(["true"], edit=edit), check=False)
    assert c.result.rc != 0
    assert h.rt.ids() == []
    left = [os.path.join(cgroupfs.own_dir(ctl), path) for ctl in _present()]
    assert not [d for d in left if os.path.isdir(d)], "cgroups left after the failed create"


@needs("update")
@case("CG-08", "runc: update", "RUNC")
def test_update_memory(h):
    """update --memory changes the running container's memory limit"""
    c, _ = _container(h, resources={"memory": {"limit": 64 * MIB}})
    assert h.rt("update", "--memory", str(96 * MIB), c.cid).ok
    d = cgroupfs.process_dir(c.pid, "memory")
    assert cgroupfs.read(d, "memory.limit_in_bytes") == str(96 * MIB)


@needs("update")
@case("CG-09", "runc: update -r", "RUNC")
def test_update_resources_file(h):
    """update -r reads a resources JSON (pids, cpu) and applies it"""
    import json

    c, _ = _container(h, resources={"pids": {"limit": 32}})
    res = h.path("resources.json")
    with open(res, "w") as f:
        json.dump({"pids": {"limit": 48}, "cpu": {"shares": 256}}, f)
    assert h.rt("update", "-r", res, c.cid).ok
    assert cgroupfs.read(cgroupfs.process_dir(c.pid, "pids"), "pids.max") == "48"
    assert cgroupfs.read(cgroupfs.process_dir(c.pid, "cpu"), "cpu.shares") == "256"


@needs("ps")
@case("CG-10", "runc: ps", "RUNC")
def test_ps(h):
    """ps --format json lists the host pids of the container's processes"""
    import json

    c, _ = _container(h)
    r = h.rt("ps", "--format", "json", c.cid)
    assert r.ok, r
    assert c.pid in json.loads(r.out)


@case("CG-11", "config-linux.md#cgroups-path", "MUST")
def test_all_processes_in_cgroup(h):
    """processes the container starts stay in its cgroup"""
    c, path = _container(h, args=("sh", "-c", "sleep 1000 & exec sleep 999"))
    assert wait_for(lambda: len(procfs.children(c.pid)) == 1, 5)
    child = procfs.children(c.pid)[0]
    for ctl in _present(("memory", "pids")):
        assert cgroupfs.process_dir(child, ctl) == cgroupfs.process_dir(c.pid, ctl)
