"""Real containers in real cgroups: placement, limits seen from inside and outside,
enforcement, device rules, refusals, and that nothing is left behind."""

from __future__ import annotations

import os

import pytest

from tests.cgroups import helpers

pytestmark = pytest.mark.root

CGROUP_MOUNT = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}


def with_resources(resources: dict, path: str | None = None, mount: bool = False):
    def edit(cfg: dict) -> None:
        cfg["linux"]["resources"] = resources
        if path is not None:
            cfg["linux"]["cgroupsPath"] = path
        if mount:
            cfg["mounts"].append(dict(CGROUP_MOUNT))
            if helpers.UNIFIED:  # cgroup2 shows the container's cgroup as its root only
                cfg["linux"]["namespaces"].append({"type": "cgroup"})  # in its namespace
    return edit


def unique(tag: str) -> str:
    return f"ocirt-test-{tag}-{os.getpid()}"


def test_container_is_placed_below_our_cgroup_in_every_hierarchy(ocirt, bundle):
    name = unique("place")
    b = bundle(["sleep", "100"], edit=with_resources({}, f"{name}/inner"))
    ocirt("create", "--bundle", b, "c1", check=True)
    pid = ocirt.state("c1")["pid"]
    own = helpers.membership()
    theirs = helpers.membership(pid)
    assert set(theirs) == set(own)
    for key, path in theirs.items():  # below our own cgroup (v2: below its parent)
        assert path == os.path.join(helpers.relative_base(key, own[key]), name, "inner"), \
            (key, path)
    ocirt("delete", "--force", "c1", check=True)
    assert helpers.leftover_dirs(name) == []


def test_default_cgroup_path_is_the_container_id(ocirt, bundle):
    cid = unique("id")
    b = bundle(["sleep", "100"], edit=lambda cfg: cfg["linux"].pop("cgroupsPath"))
    ocirt("create", "--bundle", b, cid, check=True)
    pid = ocirt.state(cid)["pid"]
    key = helpers.key_of("memory")
    base = helpers.relative_base(key, helpers.membership()[key])
    assert helpers.membership(pid)[key] == os.path.join(base, cid)
    ocirt("delete", "--force", cid, check=True)
    assert helpers.leftover_dirs(cid) == []


LIMITS = {"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20,
                     "swappiness": 10, "disableOOMKiller": False},
          "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
          "pids": {"limit": 50}}


@pytest.mark.skipif(not helpers.UNIFIED, reason="cgroup v2 files (this host is v1)")
def test_limits_seen_from_outside_v2(ocirt, bundle):
    """runc's conversions: memory+swap -> swap only, shares -> weight, quota and
    period -> cpu.max; swappiness has no v2 file and is reported, not written."""
    b = bundle(["sleep", "100"], edit=with_resources(LIMITS))
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 0, r
    assert "linux.resources.memory.swappiness: not supported on cgroup v2" in r.err, r
    d = helpers.controller_dir(ocirt.state("c1")["pid"], "memory")
    expected = {"memory.max": str(64 << 20), "memory.low": str(32 << 20),
                "memory.swap.max": str(64 << 20), "cpu.weight": "59",
                "cpu.max": "50000 100000", "cpuset.cpus": "0", "cpuset.mems": "0",
                "pids.max": "50"}
    assert {name: helpers.read(d, name) for name in expected} == expected
    ocirt("delete", "--force", "c1", check=True)


@pytest.mark.skipif(helpers.UNIFIED, reason="cgroup v1 files (this host is v2)")
def test_limits_seen_from_outside(ocirt, bundle):
    b = bundle(["sleep", "100"], edit=with_resources(LIMITS))
    ocirt("create", "--bundle", b, "c1", check=True)
    pid = ocirt.state("c1")["pid"]
    mem = helpers.controller_dir(pid, "memory")
    assert helpers.read(mem, "memory.limit_in_bytes") == str(64 << 20)
    assert helpers.read(mem, "memory.soft_limit_in_bytes") == str(32 << 20)
    assert helpers.read(mem, "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert helpers.read(mem, "memory.swappiness") == "10"
    cpu = helpers.controller_dir(pid, "cpu")
    assert helpers.read(cpu, "cpu.shares") == "512"
    assert helpers.read(cpu, "cpu.cfs_quota_us") == "50000"
    assert helpers.read(cpu, "cpu.cfs_period_us") == "100000"
    assert helpers.read(helpers.controller_dir(pid, "cpuset"), "cpuset.cpus") == "0"
    assert helpers.read(helpers.controller_dir(pid, "pids"), "pids.max") == "50"
    ocirt("delete", "--force", "c1", check=True)


def test_limits_seen_from_inside(ocirt, bundle):
    files = helpers.by_host(
        ["memory/memory.limit_in_bytes", "memory/memory.memsw.limit_in_bytes",
         "pids/pids.max", "cpu/cpu.shares", "cpu/cpu.cfs_quota_us", "cpuset/cpuset.cpus"],
        ["memory.max", "memory.swap.max", "pids.max", "cpu.weight", "cpu.max",
         "cpuset.cpus"])
    script = "cat " + " ".join(f"/sys/fs/cgroup/{name}" for name in files)
    b = bundle(["sh", "-c", script], edit=with_resources(LIMITS, mount=True))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 0, r
    assert r.out.split() == helpers.by_host(
        [str(64 << 20), str(128 << 20), "50", "512", "50000", "0"],
        [str(64 << 20), str(64 << 20), "50", "59", "50000", "100000", "0"]), r


def test_pids_limit_is_enforced(ocirt, bundle):
    b = bundle(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done 2>&1; "
                            "kill $(jobs -p) 2>/dev/null; true"],
               edit=with_resources({"pids": {"limit": 5}}))
    r = ocirt("run", "--bundle", b, "c1", timeout=60)
    assert "can't fork" in r.out + r.err, r


@pytest.mark.parametrize("limit, written", [(0, "1"), (-1, "max")])
def test_pids_limit_zero_is_a_limit_and_minus_one_none(ocirt, bundle, limit, written):
    """runtime-spec 1.3: 0 is a valid pids limit (runc 1.5 writes it as 1), -1 is none."""
    b = bundle(["sleep", "100"], edit=with_resources({"pids": {"limit": limit}}))
    ocirt("create", "--bundle", b, "c1", check=True)
    pid = ocirt.state("c1")["pid"]
    assert helpers.read(helpers.controller_dir(pid, "pids"), "pids.max") == written
    ocirt("delete", "--force", "c1", check=True)
    b = bundle(["sh", "-c", "sleep 0 && echo forked"],
               edit=with_resources({"pids": {"limit": limit}}))
    r = ocirt("run", "--bundle", b, "c2", timeout=60)
    if limit == 0:
        assert "can't fork" in r.out + r.err and "forked" not in r.out, r
    else:
        assert r.rc == 0 and "forked" in r.out, r


def test_oom_kill_gives_137(ocirt, bundle):
    b = bundle(["tail", "/dev/zero"],
               edit=with_resources({"memory": {"limit": 16 << 20, "swap": 16 << 20}}))
    r = ocirt("run", "--bundle", b, "c1", timeout=60)
    assert r.rc == 137, r


def test_podman_device_rules(ocirt, bundle):
    """Deny-all and nothing else (podman): the default devices still work, mknod is
    allowed, opening a disk is not."""
    script = ("echo hi >/dev/null && cat /dev/null && head -c1 /dev/zero >/dev/null "
              "&& echo DEFAULTS-OK; mknod /tmp/sda b 8 0 && echo MKNOD-OK; "
              "head -c1 /tmp/sda >/dev/null 2>&1 || echo DISK-DENIED; "
              "mknod /tmp/fuse c 10 229 && (head -c1 /tmp/fuse 2>&1 | grep -q 'not permitted') "
              "&& echo FUSE-DENIED")
    def edit(cfg: dict) -> None:
        with_resources({"devices": [{"allow": False, "access": "rwm"}]})(cfg)
        for caps in cfg["process"]["capabilities"].values():
            caps.append("CAP_MKNOD")

    b = bundle(["sh", "-c", script], edit=edit)
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 0, r
    for word in ("DEFAULTS-OK", "MKNOD-OK", "DISK-DENIED", "FUSE-DENIED"):
        assert word in r.out, r


@pytest.mark.skipif(helpers.UNIFIED, reason="devices.list is cgroup v1 (v2: the test below)")
def test_device_rules_in_order_in_devices_list(ocirt, bundle):
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
             {"allow": True, "type": "b", "major": 8, "minor": 20, "access": "rw"}]
    b = bundle(["sleep", "100"], edit=with_resources({"devices": rules}))
    ocirt("create", "--bundle", b, "c1", check=True)
    listed = helpers.read(helpers.controller_dir(ocirt.state("c1")["pid"], "devices"),
                          "devices.list").splitlines()
    assert listed[:3] == ["c 10:229 rwm", "b 8:20 rw", "c *:* m"]
    assert "c 1:3 rwm" in listed
    ocirt("delete", "--force", "c1", check=True)


def test_device_rules_in_order_seen_from_inside(ocirt, bundle):
    """The later rule wins: b 8:20 allowed after deny-all opens as far as the driver
    (no such disk: ENXIO), b 8:21 is refused by the device filter (EPERM)."""
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "b", "major": 8, "minor": 20, "access": "rw"}]
    script = ("mknod /tmp/allowed b 8 20 && mknod /tmp/denied b 8 21 && "
              "head -c1 /tmp/allowed; head -c1 /tmp/denied; true")

    def edit(cfg: dict) -> None:
        with_resources({"devices": rules})(cfg)
        cfg["root"]["readonly"] = False
        for caps in cfg["process"]["capabilities"].values():
            caps.append("CAP_MKNOD")

    r = ocirt("run", "--bundle", bundle(["sh", "-c", script], edit=edit), "c1")
    assert r.rc == 0, r
    said = r.out + r.err
    assert "/tmp/denied: Operation not permitted" in said, r
    assert "/tmp/allowed: Operation not permitted" not in said, r
    assert "/tmp/allowed: No such device or address" in said, r


V1_ONLY = pytest.mark.skipif(helpers.UNIFIED, reason="a v1 file's refusal (v2: below)")
V2_ONLY = pytest.mark.skipif(not helpers.UNIFIED, reason="a v2 refusal (this host is v1)")


@pytest.mark.parametrize("resources,message", [
    pytest.param({"cpu": {"shares": 1}},
                 "linux.resources.cpu.shares: the minimum allowed cpu-shares is 2",
                 marks=V1_ONLY),  # v2: weight 1, as runc converts it
    pytest.param({"memory": {"swappiness": 200}},
                 "linux.resources.memory.swappiness: invalid value 200", marks=V1_ONLY),
    pytest.param({"memory": {"limit": 1 << 26, "swap": 1 << 25}},
                 "linux.resources.memory.swap: write '33554432' to ", marks=V1_ONLY),
    pytest.param({"memory": {"limit": 1 << 26, "swap": 1 << 25}},
                 "linux.resources.memory.swap: memory+swap limit should be >= memory limit",
                 marks=V2_ONLY),
    ({"cpu": {"cpus": "999"}}, "linux.resources.cpu.cpus: write '999' to "),
    pytest.param({"unified": {"memory.high": "1"}},
                 "linux.resources.unified: cannot use unified resources", marks=V1_ONLY),
    pytest.param({"unified": {"nosuch.max": "1"}},
                 "linux.resources.unified.nosuch.max: controller 'nosuch' not available",
                 marks=V2_ONLY),
    pytest.param({"cpu": {"realtimeRuntime": 1000}},
                 "linux.resources.cpu.realtimeRuntime: realtime scheduling limits are not "
                 "supported on cgroup v2", marks=V2_ONLY),
    pytest.param({"network": {"classID": 1}},
                 "linux.resources.network.classID: cannot set net_cls limit", marks=V1_ONLY),
    ({"memory": {"limit": "64m"}}, "linux.resources.memory.limit: must be an integer"),
])
def test_refused_values_fail_create_and_leave_nothing(ocirt, bundle, resources, message):
    name = unique("refused")
    b = bundle(["true"], edit=with_resources(resources, name))
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1 and message in r.err, r
    assert ocirt.ids() == []
    assert helpers.leftover_dirs(name) == []


def test_a_busy_cgroup_is_refused(ocirt, bundle):
    name = unique("busy")
    b = bundle(["sleep", "100"], edit=with_resources({}, name))
    ocirt("create", "--bundle", b, "c1", check=True)
    r = ocirt("create", "--bundle", b, "c2")
    assert r.rc == 1 and "container's cgroup is not empty: 1 process(es)" in r.err, r
    assert ocirt.status("c1") == "created"  # the first one is untouched
    ocirt("delete", "--force", "c1", check=True)
    assert helpers.leftover_dirs(name) == []


def test_a_parent_we_made_outlives_us_while_shared(ocirt, bundle):
    """Of the directories a container made, the parents go with it only when empty:
    another container may have been put next to it (runc never removes parents)."""
    name = unique("parent")
    b1 = bundle(["sleep", "100"], edit=with_resources({}, f"{name}/a"))
    b2 = bundle(["sleep", "100"], edit=with_resources({}, f"{name}/b"))
    ocirt("create", "--bundle", b1, "c1", check=True)
    ocirt("create", "--bundle", b2, "c2", check=True)
    ocirt("delete", "--force", "c1", check=True)
    assert ocirt.status("c2") == "created"
    parents = helpers.leftover_dirs(name)
    assert len(parents) == len(helpers.own_dirs())
    assert all(os.listdir(p) for p in parents)  # c2's cgroup is still inside
    ocirt("delete", "--force", "c2", check=True)
    for directory in helpers.leftover_dirs(name):  # c2 did not make it: ours to tidy
        assert not any(os.path.isdir(os.path.join(directory, n)) for n in os.listdir(directory))
        os.rmdir(directory)


@pytest.mark.skipif(not helpers.UNIFIED, reason="v1-only settings on a v2 host")
def test_v1_only_settings_are_reported_on_v2(ocirt, bundle):
    """runc ignores what v2 has no file for; we do too, but say so on stderr."""
    b = bundle(["true"], edit=with_resources({"memory": {"swappiness": 10,
                                                         "disableOOMKiller": True},
                                              "network": {"classID": 1}}))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 0, r
    for field in ("memory.swappiness", "memory.disableOOMKiller", "network"):
        assert f"linux.resources.{field}: " in r.err, (field, r)


def seen_cgroups(out: str) -> dict[str, str]:
    """A /proc/self/cgroup printed inside, keyed as helpers.membership keys it."""
    seen = {}
    for line in out.splitlines():
        _, key, path = line.split(":", 2)
        seen[",".join(sorted(key.split(","))) if key else ""] = path
    return seen


def test_the_init_is_born_in_its_cgroups_and_sees_them_all(ocirt, bundle):
    """create starts the intermediate inside the container's cgroups (clone3 into the
    cgroup2 directory, the v1 ones joined by itself) instead of writing the init's PID
    to cgroup.procs, which waits for an RCU grace period; the container sees every one."""
    name = unique("born")
    b = bundle(["cat", "/proc/self/cgroup"], edit=with_resources({}, f"{name}/inner"))
    r = ocirt("--debug", "run", "--bundle", b, "c1", check=True)
    own = helpers.membership()
    assert _born_line(len(helpers.own_dirs()), own) in r.err, r.err
    seen = seen_cgroups(r.out)
    assert set(seen) == set(own)
    for key, path in seen.items():  # (no cgroup namespace: the host's paths)
        assert path == os.path.join(helpers.relative_base(key, own[key]), name, "inner"), \
            (key, path)
    assert helpers.leftover_dirs(name) == []


def _born_line(n: int, own: dict[str, str]) -> str:
    clone3 = "with clone3" if "" in own else "without clone3"
    return f"born in its cgroups: {n} of {n} directories, {clone3}"


def test_exec_is_born_in_the_containers_cgroups(ocirt, bundle):
    """`exec` forks its process inside the container's cgroups as create does (clone3
    into cgroup2, the v1 ones joined by the process itself) instead of writing its PID
    to cgroup.procs; the process is in exactly the init's cgroups."""
    name = unique("xborn")
    b = bundle(["sleep", "100"], edit=with_resources({}, f"{name}/inner"))
    ocirt("run", "-d", "--bundle", b, "c1", check=True)
    init = helpers.membership(ocirt.state("c1")["pid"])
    r = ocirt("--debug", "exec", "c1", "cat", "/proc/self/cgroup", check=True)
    assert _born_line(len(helpers.own_dirs()), helpers.membership()) in r.err, r.err
    seen = seen_cgroups(r.out)
    assert seen == init
    ocirt("delete", "--force", "c1", check=True)
    assert helpers.leftover_dirs(name) == []


def test_exec_into_a_full_pids_cgroup_runs_and_its_forks_are_refused(ocirt, bundle):
    """pids.max refuses forks, never a move into the cgroup (runc's exec runs in a full
    container too): where clone3 into a full cgroup2 directory is refused (EAGAIN), the
    process is forked outside and moved in. Once inside, its own fork is refused."""
    name = unique("xpids")
    b = bundle(["sleep", "100"], edit=with_resources({"pids": {"limit": 1}}, name))
    ocirt("run", "-d", "--bundle", b, "c1", check=True)
    pids_dir = helpers.controller_dir(ocirt.state("c1")["pid"], "pids")
    assert helpers.read(pids_dir, "pids.max") == "1"
    r = ocirt("--debug", "exec", "c1", "cat", "/proc/self/cgroup")
    assert r.rc == 0, r
    if helpers.UNIFIED:  # the pids controller is cgroup2's: clone3 was refused
        assert "resource temporarily unavailable; the process is moved there" in r.err, r.err
    assert seen_cgroups(r.out) == helpers.membership(ocirt.state("c1")["pid"])
    r = ocirt("exec", "c1", "sh", "-c", "true & wait")
    assert r.rc != 0 and "can't fork" in r.err, r
    ocirt("delete", "--force", "c1", check=True)
    assert helpers.leftover_dirs(name) == []
