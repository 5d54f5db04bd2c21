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
    for key, path in theirs.items():  # relative cgroupsPath nests below our own cgroup
        assert path == os.path.join(own[key], name, "inner"), (key, path)
    ocirt("delete", "--force", "c1", check=True)
    assert helpers.leftover_dirs(name) == []


def test_default_cgroup_path_is_the_container_id(ocirt, bundle):
    cid = unique("id")
    b = bundle(["sleep", "100"], edit=lambda cfg: cfg["linux"].pop("cgroupsPath"))
    ocirt("create", "--bundle", b, cid, check=True)
    pid = ocirt.state(cid)["pid"]
    assert helpers.membership(pid)["memory"] == os.path.join(helpers.membership()["memory"],
                                                             cid)
    ocirt("delete", "--force", cid, check=True)
    assert helpers.leftover_dirs(cid) == []


LIMITS = {"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20,
                     "swappiness": 10, "disableOOMKiller": False},
          "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
          "pids": {"limit": 50}}


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
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
              "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes "
              "/sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.shares "
              "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpuset/cpuset.cpus")
    b = bundle(["sh", "-c", script], edit=with_resources(LIMITS, mount=True))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 0, r
    assert r.out.split() == [str(64 << 20), str(128 << 20), "50", "512", "50000", "0"], r


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


@pytest.mark.parametrize("resources,message", [
    ({"cpu": {"shares": 1}}, "linux.resources.cpu.shares: the minimum allowed cpu-shares is 2"),
    ({"memory": {"swappiness": 200}}, "linux.resources.memory.swappiness: invalid value 200"),
    ({"memory": {"limit": 1 << 26, "swap": 1 << 25}},
     "linux.resources.memory.swap: write '33554432' to "),
    ({"cpu": {"cpus": "999"}}, "linux.resources.cpu.cpus: write '999' to "),
    ({"unified": {"memory.high": "1"}}, "linux.resources.unified: cannot use unified resources"),
    ({"network": {"classID": 1}}, "linux.resources.network.classID: cannot set net_cls limit"),
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
