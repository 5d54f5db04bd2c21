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
    """The controllers of `controllers` this host has (on v2 all in one hierarchy);
    a case that would check none of them fails rather than pass on nothing."""
    found = [c for c in controllers if cgroupfs.hierarchy_for(c) is not None]
    assert found, f"this host has none of {controllers}: nothing to check"
    return found


def _relative_base(h, controller):
    """Where a relative cgroupsPath lands: below the runtime's own cgroup (v1), or
    below its parent on v2 (runc), which inside the v2 sandbox is the namespace root."""
    sandbox = h.info.sandbox
    if cgroupfs.is_unified() and sandbox is not None and sandbox.v2_root:
        return sandbox.v2_root
    return cgroupfs.placement_dir(controller)


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
        base = _relative_base(h, ctl)
        assert cgroupfs.process_dir(c.pid, ctl) == os.path.join(base, path), ctl


@case("CG-02", "config-linux.md#cgroups-path", "MUST")
def test_absolute_path(h):
    """an absolute cgroupsPath is taken from the root of the (namespaced) hierarchy"""
    if h.info.sandbox is None:
        pytest.skip("absolute cgroup paths only inside the suite's cgroup namespace")
    top = h.cgroup_name("abs")
    c, path = _container(h, path=f"/{top}/inner")
    for ctl in _present():
        root = h.info.sandbox.root_dir(cgroupfs.hierarchy_for(ctl).key)
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


# One case per resource: what cgroup v1 shows and what cgroup v2 shows (runc's
# conversions: shares -> weight, memory+swap -> swap only, quota/period -> cpu.max), or
# why v2 has nothing to show.
V2_NONE = {
    "swappiness": "cgroup v2 has no per-cgroup swappiness (runtimes ignore it there)",
    "oom": "cgroup v2 cannot turn the OOM killer off per cgroup (runtimes ignore it there)",
    "rt": "cgroup v2 has no realtime CPU limits (runtimes refuse them there)",
    "net_cls": "cgroup v2 has no net_cls controller (runtimes ignore network there)",
}


def _resources():
    dev = _block_device()
    weight_v2 = 1 + (500 - 10) * 9999 // 990  # blkio weight [10, 1000] -> io [1, 10000]
    cases = [
        ("memory-limit", {"memory": {"limit": 64 * MIB}}, "memory",
         ("memory.limit_in_bytes", str(64 * MIB)), ("memory.max", str(64 * MIB))),
        ("memory-reservation", {"memory": {"limit": 64 * MIB, "reservation": 32 * MIB}},
         "memory", ("memory.soft_limit_in_bytes", str(32 * MIB)),
         ("memory.low", str(32 * MIB))),
        ("memory-swap", {"memory": {"limit": 64 * MIB, "swap": 128 * MIB}}, "memory",
         ("memory.memsw.limit_in_bytes", str(128 * MIB)), ("memory.swap.max", str(64 * MIB))),
        ("memory-swappiness", {"memory": {"swappiness": 10}}, "memory",
         ("memory.swappiness", "10"), V2_NONE["swappiness"]),
        ("memory-oom-killer", {"memory": {"disableOOMKiller": True}}, "memory",
         ("memory.oom_control", "oom_kill_disable 1"), V2_NONE["oom"]),
        ("cpu-shares", {"cpu": {"shares": 512}}, "cpu", ("cpu.shares", "512"),
         ("cpu.weight", "59")),
        ("cpu-quota", {"cpu": {"quota": 50000, "period": 100000}}, "cpu",
         ("cpu.cfs_quota_us", "50000"), ("cpu.max", "50000 100000")),
        ("cpu-period", {"cpu": {"quota": 50000, "period": 200000}}, "cpu",
         ("cpu.cfs_period_us", "200000"), ("cpu.max", "50000 200000")),
        ("cpu-burst", {"cpu": {"quota": 50000, "period": 100000, "burst": 10000}}, "cpu",
         ("cpu.cfs_burst_us", "10000"), ("cpu.max.burst", "10000"), [
             deviation("runc", "runc 1.1.5 does not write cpu.burst on cgroup v1"),
             deviation("crun", "crun 1.8.1 does not write cpu.burst on cgroup v1")]),
        ("cpuset-cpus", {"cpu": {"cpus": "0"}}, "cpuset", ("cpuset.cpus", "0"),
         ("cpuset.cpus", "0")),
        ("cpuset-mems", {"cpu": {"mems": "0"}}, "cpuset", ("cpuset.mems", "0"),
         ("cpuset.mems", "0")),
        ("pids-limit", {"pids": {"limit": 32}}, "pids", ("pids.max", "32"), ("pids.max", "32")),
        ("cpu-rt-period", {"cpu": {"realtimePeriod": 500000}}, "cpu",
         ("cpu.rt_period_us", "500000"), V2_NONE["rt"]),
        ("cpu-idle", {"cpu": {"idle": 1}}, "cpu", ("cpu.idle", "1"), ("cpu.idle", "1"), [
            deviation("runc", "runc 1.1.5 does not write cpu.idle on cgroup v1")]),
        ("blkio-weight", {"blockIO": {"weight": 500}}, "blkio", ("blkio.weight", "500"),
         ("io.weight", f"default {weight_v2}")),
        ("hugetlb-limit", {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MIB}]},
         "hugetlb", ("hugetlb.2MB.limit_in_bytes", str(4 * MIB)),
         ("hugetlb.2MB.max", str(4 * MIB))),
        ("net-cls-classid", {"network": {"classID": 1048577}}, "net_cls",
         ("net_cls.classid", "1048577"), V2_NONE["net_cls"]),
    ]
    if dev:
        major, minor = dev
        rate = {"major": major, "minor": minor, "rate": MIB}
        cases += [
            ("blkio-read-bps", {"blockIO": {"throttleReadBpsDevice": [rate]}}, "blkio",
             ("blkio.throttle.read_bps_device", f"{major}:{minor} {MIB}"),
             ("io.max", f"{major}:{minor} rbps={MIB} wbps=max riops=max wiops=max")),
            ("blkio-write-iops", {"blockIO": {"throttleWriteIOPSDevice": [
                dict(rate, rate=100)]}}, "blkio",
             ("blkio.throttle.write_iops_device", f"{major}:{minor} 100"),
             ("io.max", f"{major}:{minor} rbps=max wbps=max riops=max wiops=100")),
        ]
    v2 = cgroupfs.is_unified()
    # the deviations recorded are about v1 files; on v2 each runtime is held to the case
    return [pytest.param(*c[1:5], id=c[0], marks=() if v2 or len(c) < 6 else c[5])
            for c in cases]


@pytest.mark.parametrize("resources,controller,v1,v2", _resources())
@case("CG-04", "config-linux.md#control-groups", "MUST")
def test_resource(h, resources, controller, v1, v2):
    """each resource value is written to its cgroup file (read back from the kernel)"""
    if cgroupfs.is_unified():
        _check_v2_resource(h, resources, "io" if controller == "blkio" else controller, v2)
        return
    filename, expected = v1
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


def _check_v2_resource(h, resources, controller, v2):
    """On v2 the runtime must pass the controller down to the container's cgroup, so
    the file has to be there; only a controller the host lacks skips."""
    if isinstance(v2, str):
        pytest.skip(v2)
    filename, expected = v2
    if controller not in cgroupfs.v2_controllers():
        pytest.skip(f"this host's cgroup2 mount has no {controller} controller")
    sandbox = h.info.sandbox
    if sandbox is not None and sandbox.v2_root:
        given = cgroupfs.read(sandbox.v2_root, "cgroup.controllers").split()
        if controller not in given:  # the runtime in the namespace cannot reach above it
            pytest.skip(f"{controller} is not delegated to the suite's cgroup "
                        f"{os.path.dirname(sandbox.v2_root)} (systemd passes down only the "
                        "controllers it manages)")
    c, _ = _container(h, resources=resources)
    d = cgroupfs.process_dir(c.pid, controller)
    if filename == "io.weight" and os.path.exists(os.path.join(d, "io.bfq.weight")):
        filename, expected = "io.bfq.weight", f"default {resources['blockIO']['weight']}"
    assert os.path.exists(os.path.join(d, filename)), \
        f"{d}/{filename} does not exist: {controller} was not passed down to the container"
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
    if cgroupfs.is_unified():  # v2 has no devices.list: the probe above is the check
        return
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
    left = [os.path.join(_relative_base(h, ctl), path) for ctl in _present()]
    assert not [d for d in left if os.path.isdir(d)], "cgroups left after the failed create"


@needs("update")
@case("CG-08", "runc: update", "RUNC")
def test_update_memory(h):
    """update --memory changes the running container's memory limit"""
    c, _ = _container(h, resources={"memory": {"limit": 64 * MIB}})
    assert h.rt("update", "--memory", str(96 * MIB), c.cid).ok
    d = cgroupfs.process_dir(c.pid, "memory")
    name = "memory.max" if cgroupfs.is_unified() else "memory.limit_in_bytes"
    assert cgroupfs.read(d, name) == str(96 * MIB)


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
    cpu = cgroupfs.process_dir(c.pid, "cpu")
    if cgroupfs.is_unified():  # runc's shares -> weight conversion
        assert cgroupfs.read(cpu, "cpu.weight") == "35"
    else:
        assert cgroupfs.read(cpu, "cpu.shares") == "256"


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
